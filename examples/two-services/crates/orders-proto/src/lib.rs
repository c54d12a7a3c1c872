//! Generated code for the `orders.v1` protobuf package, and the service's identity.
//!
//! The aliases below let the server and client crates name the service without its rendered name.
#![allow(missing_docs, unreachable_pub, clippy::all)] // Generated code follows prost's style.

tonic::include_proto!("orders.v1");

pub use orders_client::OrdersClient as ServiceClient;
pub use orders_server::Orders as Service;
pub use orders_server::OrdersServer as ServiceServer;

/// `service.name` of the server process (`OTEL_SERVICE_NAME` overrides it).
pub const SERVICE_NAME: &str = "orders";

/// The fully qualified gRPC service name, as in `rpc.method`.
pub const GRPC_SERVICE: &str = "orders.v1.Orders";

/// Prefix of the service's own metrics (`orders.requests.total`, ...).
pub const METRIC_PREFIX: &str = "orders";

/// The port the server listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 50052;

// `IDEMPOTENT_METHODS`, from the protos' `option idempotency_level`.
include!(concat!(env!("OUT_DIR"), "/idempotent.rs"));

/// The encoded descriptor set of the package, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
