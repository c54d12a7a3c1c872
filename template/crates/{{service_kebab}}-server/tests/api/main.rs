//! The server's behaviour, through the real client against the real server, with telemetry
//! exported to an in-process OTLP receiver. One test binary: a file per behaviour.
#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

// The library is named after the service; the tests call it `server`.
extern crate {{service_snake}}_server as server;

// What a real binary shows (`process`, `shutdown`, `dashboard`) and the shared machinery seen
// through this service (`deadlines`, `tls`, and `tests/fleet.rs`) are tested in the workspace's
// first service only: an added service's copy would run the same code again.
{%- unless is_init %}
mod dashboard;
{%- endunless %}
{%- unless is_init %}
mod deadlines;
{%- endunless %}
mod errors;
mod helpers;
mod logs;
mod metrics;
{%- if is_init %}
mod neighbour;
{%- endif %}
{%- unless is_init %}
mod process;
mod shutdown;
{%- endunless %}
mod stream_results;
{%- unless is_init %}
mod tls;
{%- endunless %}
mod traces;
