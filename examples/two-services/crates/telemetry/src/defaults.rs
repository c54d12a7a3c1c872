//! The workspace's telemetry defaults, fixed when the template was rendered; the environment
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_RESOURCE_ATTRIBUTES`)
//! overrides them at run time.

use crate::settings::{Defaults, Protocol};

/// Where telemetry goes when the environment names no collector.
pub const DEFAULTS: Defaults = Defaults {
    endpoint: "http://localhost:4317",
    protocol: Protocol::Grpc,
};

/// Resource attributes every signal carries, in `OTEL_RESOURCE_ATTRIBUTES` syntax; a key set in
/// `OTEL_RESOURCE_ATTRIBUTES` wins.
pub const RESOURCE_ATTRIBUTES: &str = "deployment.environment.name=development";

/// `service.namespace` of every service of the workspace (the workspace's name); a value in the
/// attributes above or in `OTEL_RESOURCE_ATTRIBUTES` wins.
pub const SERVICE_NAMESPACE: &str = "shop";
