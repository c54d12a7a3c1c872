//! The workspace's telemetry defaults, fixed when the template was rendered; the environment
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`) overrides them at run time.

use crate::settings::{Defaults, Protocol};

/// Where telemetry goes when the environment names no collector.
pub const DEFAULTS: Defaults = Defaults {
    endpoint: "http://localhost:4318",
    protocol: Protocol::HttpProtobuf,
};
