//! Generated code for the `myservice.v1` protobuf package, and the service's identity.
//!
//! The aliases below let the server and client crates name the service without its rendered name.
#![allow(missing_docs, unreachable_pub, clippy::all)] // Generated code follows prost's style.

tonic::include_proto!("myservice.v1");

pub use my_service_client::MyServiceClient as ServiceClient;
pub use my_service_server::MyService as Service;
pub use my_service_server::MyServiceServer as ServiceServer;

/// `service.name` of the server process (`OTEL_SERVICE_NAME` overrides it).
pub const SERVICE_NAME: &str = "my-service";

/// The fully qualified gRPC service name, as in `rpc.method`.
pub const GRPC_SERVICE: &str = "myservice.v1.MyService";

/// Prefix of the service's own metrics (`myservice.requests.total`, ...).
pub const METRIC_PREFIX: &str = "myservice";

/// The port the server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 50051;

// `IDEMPOTENT_METHODS`, from the protos' `option idempotency_level`.
include!(concat!(env!("OUT_DIR"), "/idempotent.rs"));

/// The encoded descriptor set of the package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
