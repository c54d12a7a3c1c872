//! Generated code for the `{{proto_package}}` protobuf package, and the service's identity.
//!
//! The aliases below let the server and client crates name the service without its rendered name.
#![allow(missing_docs, unreachable_pub, clippy::all)] // Generated code follows prost's style.

tonic::include_proto!("{{proto_package}}");

pub use {{service_snake}}_client::{{service_name}}Client as ServiceClient;
pub use {{service_snake}}_server::{{service_name}} as Service;
pub use {{service_snake}}_server::{{service_name}}Server as ServiceServer;

/// `service.name` of the server process (`OTEL_SERVICE_NAME` overrides it).
pub const SERVICE_NAME: &str = "{{service_kebab}}";

/// The fully qualified gRPC service name, as in `rpc.method`.
pub const GRPC_SERVICE: &str = "{{proto_package}}.{{service_name}}";

/// Prefix of the service's own metrics (`{{metric_prefix}}.requests.total`, ...).
pub const METRIC_PREFIX: &str = "{{metric_prefix}}";

/// The port the server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = {{port}};

// `IDEMPOTENT_METHODS`, from the protos' `option idempotency_level`.
include!(concat!(env!("OUT_DIR"), "/idempotent.rs"));

/// The encoded descriptor set of the package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
