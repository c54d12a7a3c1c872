//! Deadlines and retries for every call of a [`crate::Connection`], after gRFC A6 (client
//! retries).
//!
//! Every call has a deadline ([`CallSettings::timeout_ms`], 10 s unless changed): each attempt
//! carries the time that is left as `grpc-timeout`, no retry starts once it has passed or would
//! pass during the backoff, and its expiry is DEADLINE_EXCEEDED (tonic's own timers say
//! CANCELLED). A call is retried only when its method is idempotent by its proto
//! (`option idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS`: the service's
//! [`ServiceInfo::idempotent_methods`]),
//! only after UNAVAILABLE or a CANCELLED that the transport caused (a deadline's never is), only
//! before its response headers came (A6's commit: a stream is never retried once it has started),
//! at most [`CallSettings::max_attempts`] times (5 at most, as A6 caps it), after an exponential
//! backoff with ±20 % jitter or the server's `grpc-retry-pushback-ms`, and only while the
//! client's retry throttle (A6's token bucket, shared by every clone of the client) has tokens,
//! so a failing fleet is not stormed. Each retry sends again a copy of the request's body (see
//! [`crate::replay`]), up to [`RETRY_BUFFER_BYTES`]: past it the call is committed and not
//! retried; each retry says `grpc-previous-rpc-attempts`.
//!
//! All of it is a tower layer on the channel ([`RetryService`]), so every method of the service's
//! generated client gets it with no wrapper: a new RPC needs no client code. A call's deadline is
//! its request's `grpc-timeout` (`request.set_timeout(..)`), else the connection's.
//!
//! Telemetry: one CLIENT span per logical call ([`telemetry::grpc::GrpcClientLayer::start_call`]),
//! one `grpc.client.attempt.<Method>` child per attempt (made by the layer below, on the
//! channel), `<prefix>.client.retries.throttled` counting the retries the throttle refused.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use telemetry::grpc::{Attempt, GrpcClientLayer, SpanAttributes};
use tonic::Code;
use tonic::codegen::Bytes;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::ServiceInfo;
use crate::deadline::StreamDeadline;
use crate::replay::{Replay, ReplayBody};

/// The most attempts a call may make, whatever the settings say (gRFC A6's cap).
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// The most of a call's request a retry can send again (the retry buffer of grpc-go and
/// grpc-java): a call that has sent more is committed to its attempt and not retried. Far above a
/// unary request; a client stream past it is sent once.
pub const RETRY_BUFFER_BYTES: usize = 256 * 1024;

/// A call's deadline unless changed: far above the example's milliseconds, and above a few
/// retries' backoff, yet short enough that a hung replica costs a caller seconds, not minutes.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Attempts per call unless changed, the first included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// The backoff before the first retry unless changed (±20 % jitter).
pub const DEFAULT_INITIAL_BACKOFF_MS: u64 = 100;
/// The longest backoff unless changed.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 1_000;
/// How much each backoff grows on the last unless changed.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
/// The retry throttle's bucket (A6 `maxTokens`) unless changed. Retries stop below half of it,
/// so it bounds the failures in a row that are still retried: A6's example of 10 refused the
/// retries of the 5th and 6th of 6 calls that a replica killed or hung in a fleet test had in
/// flight at once. After a bucket drains, calls make about `1 + tokenRatio` attempts whatever
/// its size.
pub const DEFAULT_THROTTLE_MAX_TOKENS: u32 = 100;
/// Tokens a successful call puts back (A6 `tokenRatio`; its example's value) unless changed.
pub const DEFAULT_THROTTLE_TOKEN_RATIO: f64 = 0.1;

/// The deadline and retry settings of a client: flags and environment variables of the CLI
/// (`#[command(flatten)]`), or set in code (`CallSettings { max_attempts: 1, ..Default::default() }`
/// turns retries off). The defaults are the `DEFAULT_*` constants above, in this one place.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct CallSettings {
    /// Milliseconds a call may take, its retries and their backoff included (its deadline).
    #[arg(long = "call-timeout-ms", env = "CALL_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,

    /// Attempts per call of an idempotent method, the first included (1 turns retries off; more
    /// than 5 is taken as 5).
    #[arg(long = "retry-max-attempts", env = "RETRY_MAX_ATTEMPTS",
          default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,

    /// Milliseconds of backoff before the first retry (±20 % jitter).
    #[arg(long = "retry-initial-backoff-ms", env = "RETRY_INITIAL_BACKOFF_MS",
          default_value_t = DEFAULT_INITIAL_BACKOFF_MS)]
    pub initial_backoff_ms: u64,

    /// The longest backoff, in milliseconds.
    #[arg(long = "retry-max-backoff-ms", env = "RETRY_MAX_BACKOFF_MS",
          default_value_t = DEFAULT_MAX_BACKOFF_MS)]
    pub max_backoff_ms: u64,

    /// How much each backoff grows on the last (at least 1).
    #[arg(long = "retry-backoff-multiplier", env = "RETRY_BACKOFF_MULTIPLIER",
          default_value_t = DEFAULT_BACKOFF_MULTIPLIER)]
    pub backoff_multiplier: f64,

    /// Retry throttle: the token bucket's size (1 to 1000). Each failed attempt takes a token,
    /// each success gives back the ratio; retries stop while half or fewer remain.
    #[arg(long = "retry-throttle-max-tokens", env = "RETRY_THROTTLE_MAX_TOKENS",
          default_value_t = DEFAULT_THROTTLE_MAX_TOKENS,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub throttle_max_tokens: u32,

    /// Retry throttle: tokens a successful call gives back (more than 0, 3 decimals at most).
    #[arg(long = "retry-throttle-token-ratio", env = "RETRY_THROTTLE_TOKEN_RATIO",
          default_value_t = DEFAULT_THROTTLE_TOKEN_RATIO)]
    pub throttle_token_ratio: f64,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            initial_backoff_ms: DEFAULT_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            throttle_max_tokens: DEFAULT_THROTTLE_MAX_TOKENS,
            throttle_token_ratio: DEFAULT_THROTTLE_TOKEN_RATIO,
        }
    }
}

/// Settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid call setting {setting}: {problem}")]
pub struct SettingsError {
    /// The flag (and variable) at fault.
    pub setting: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl CallSettings {
    /// The call deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Whether the settings can work (a CLI checks them before it connects); more than
    /// [`MAX_ATTEMPTS_CAP`] attempts are not an error, they are taken as the cap.
    pub fn check(&self) -> Result<(), SettingsError> {
        let mut settings = self.clone();
        settings.max_attempts = settings.max_attempts.min(MAX_ATTEMPTS_CAP);
        settings.validated().map(drop)
    }

    /// Checks the settings; more than [`MAX_ATTEMPTS_CAP`] attempts are taken as the cap, with a
    /// warning, as gRFC A6 says.
    fn validated(mut self) -> Result<Self, SettingsError> {
        let error = |setting, problem: &str| SettingsError {
            setting,
            problem: problem.to_owned(),
        };
        if self.timeout_ms == 0 {
            return Err(error(
                "--call-timeout-ms (CALL_TIMEOUT_MS)",
                "must be at least 1",
            ));
        }
        if self.max_attempts == 0 {
            return Err(error(
                "--retry-max-attempts (RETRY_MAX_ATTEMPTS)",
                "must be at least 1 (1 turns retries off)",
            ));
        }
        if self.max_attempts > MAX_ATTEMPTS_CAP {
            tracing::warn!(
                "--retry-max-attempts (RETRY_MAX_ATTEMPTS) is {}: taken as {MAX_ATTEMPTS_CAP}, the \
                 most gRFC A6 allows",
                self.max_attempts
            );
            self.max_attempts = MAX_ATTEMPTS_CAP;
        }
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(error(
                "--retry-backoff-multiplier (RETRY_BACKOFF_MULTIPLIER)",
                "must be a number, at least 1",
            ));
        }
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(error(
                "--retry-max-backoff-ms (RETRY_MAX_BACKOFF_MS)",
                "must not be below --retry-initial-backoff-ms",
            ));
        }
        if !(1..=1000).contains(&self.throttle_max_tokens) {
            return Err(error(
                "--retry-throttle-max-tokens (RETRY_THROTTLE_MAX_TOKENS)",
                "must be from 1 to 1000",
            ));
        }
        let ratio = self.throttle_token_ratio;
        if !(ratio.is_finite() && ratio > 0.0 && ratio <= f64::from(self.throttle_max_tokens)) {
            return Err(error(
                "--retry-throttle-token-ratio (RETRY_THROTTLE_TOKEN_RATIO)",
                "must be more than 0 and at most the bucket's size",
            ));
        }
        Ok(self)
    }
}

/// gRFC A6's retry throttle: a bucket of `max_tokens`, in thousandths (A6 keeps three decimals
/// of `tokenRatio`). A failed attempt takes one token, a successful call gives back the ratio;
/// retries are allowed only while more than half the bucket remains.
#[derive(Debug)]
pub(crate) struct Throttle {
    tokens: AtomicU64,
    max: u64,
    ratio: u64,
}

impl Throttle {
    fn new(max_tokens: u32, token_ratio: f64) -> Self {
        let max = u64::from(max_tokens) * 1000;
        // Validated: 0 < ratio <= 1000, so the product fits.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ratio = ((token_ratio * 1000.0).round() as u64).max(1);
        Self {
            tokens: AtomicU64::new(max),
            max,
            ratio,
        }
    }

    fn failed(&self) {
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(1000))
            });
    }

    fn succeeded(&self) {
        // Full already: nothing to write (the healthy path's common case).
        if self.tokens.load(Ordering::Relaxed) >= self.max {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some((t + self.ratio).min(self.max))
            });
    }

    fn allows_retry(&self) -> bool {
        self.tokens.load(Ordering::Relaxed) > self.max / 2
    }
}

/// What every clone of a connection shares: the service, the settings, the throttle, the
/// telemetry layer that opens each call's span, and the throttle's counter.
#[derive(Debug)]
pub(crate) struct Calls {
    pub(crate) service: ServiceInfo,
    pub(crate) settings: CallSettings,
    throttle: Throttle,
    layer: GrpcClientLayer,
    throttled: Counter<u64>,
}

impl Calls {
    pub(crate) fn new(
        service: ServiceInfo,
        settings: CallSettings,
        layer: GrpcClientLayer,
    ) -> Result<Self, SettingsError> {
        let settings = settings.validated()?;
        let throttled = opentelemetry::global::meter("telemetry")
            .u64_counter(format!(
                "{}.client.retries.throttled",
                service.metric_prefix
            ))
            .with_unit("{retries}")
            .with_description(
                "Retries not made because the client's retry throttle was drained (gRFC A6)",
            )
            .build();
        Ok(Self {
            service,
            throttle: Throttle::new(settings.throttle_max_tokens, settings.throttle_token_ratio),
            settings,
            layer,
            throttled,
        })
    }

    pub(crate) fn layer(&self) -> &GrpcClientLayer {
        &self.layer
    }

    /// After attempt `number` of a call of `method` (`package.Service/Method`) failed with
    /// `status`: the delay after which to retry, or `None` when the call ends with `status`. Only
    /// an idempotent method is retried, only after UNAVAILABLE or CANCELLED, only while the call
    /// has not `committed`, below the attempts allowed, while the server's pushback allows it and
    /// the throttle has tokens, and only when the retry can start before `deadline`. Counts the
    /// failure in the throttle, and a retry the throttle refused.
    pub(crate) fn next_attempt(
        &self,
        method: &str,
        committed: bool,
        number: u32,
        status: &tonic::Status,
        backoff: &mut Duration,
        deadline: tokio::time::Instant,
    ) -> Option<Duration> {
        let settings = &self.settings;
        let retryable = matches!(status.code(), Code::Unavailable | Code::Cancelled);
        if retryable {
            self.throttle.failed();
        }
        let pushback = pushback(status);
        let retry = self.service.idempotent_methods.contains(&method)
            && retryable
            && !committed
            && number < settings.max_attempts
            && pushback != Some(None);
        if !retry {
            return None;
        }
        if !self.throttle.allows_retry() {
            self.throttled
                .add(1, &[KeyValue::new("rpc.method", method.to_owned())]);
            return None;
        }
        let delay = match pushback {
            Some(Some(delay)) => {
                *backoff = Duration::from_millis(settings.initial_backoff_ms);
                delay
            }
            _ => {
                let delay = jittered(*backoff);
                *backoff = backoff
                    .mul_f64(settings.backoff_multiplier)
                    .min(Duration::from_millis(settings.max_backoff_ms));
                delay
            }
        };
        // A retry that could not start before the deadline is not made: the caller gets the last
        // attempt's status now, not a DEADLINE_EXCEEDED later.
        (tokio::time::Instant::now() + delay < deadline).then_some(delay)
    }

    /// A call's attempt came back with its response headers (or OK): gives the throttle back
    /// its ratio.
    pub(crate) fn succeeded(&self) {
        self.throttle.succeeded();
    }
}

/// The server's `grpc-retry-pushback-ms`: `None` when absent (the backoff decides),
/// `Some(None)` when negative or malformed (gRFC A6: do not retry), else the delay it asks for.
fn pushback(status: &tonic::Status) -> Option<Option<Duration>> {
    let value = status.metadata().get("grpc-retry-pushback-ms")?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .map(Duration::from_millis),
    )
}

/// `backoff` ±20 %, uniformly.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.8 + 0.4 * fastrand::f64())
}

// The headers each attempt sets or reads, named once rather than parsed from text per call.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
const GRPC_PREVIOUS_RPC_ATTEMPTS: http::HeaderName =
    http::HeaderName::from_static("grpc-previous-rpc-attempts");
const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The channel with deadlines and retries: every call through it is one logical call (its CLIENT
/// span) of attempts through `S` (the telemetry layer on the transport). Clones share the
/// throttle; each has its default deadline ([`crate::Connection::with_timeout`]).
#[derive(Clone, Debug)]
pub struct RetryService<S> {
    inner: S,
    calls: Arc<Calls>,
    timeout: Duration,
}

impl<S> RetryService<S> {
    pub(crate) fn new(inner: S, calls: Arc<Calls>) -> Self {
        let timeout = calls.settings.timeout();
        Self {
            inner,
            calls,
            timeout,
        }
    }

    pub(crate) fn inner(&self) -> &S {
        &self.inner
    }

    pub(crate) fn calls(&self) -> &Arc<Calls> {
        &self.calls
    }

    pub(crate) fn with_timeout(&self, timeout: Duration) -> Self
    where
        S: Clone,
    {
        Self {
            timeout,
            ..self.clone()
        }
    }
}

/// The future of a call through [`RetryService`].
pub type RetryFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<S, B> tower::Service<http::Request<tonic::body::Body>> for RetryService<S>
where
    S: tower::Service<http::Request<ReplayBody>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: std::error::Error + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    /// A call's failure is its status, as a trailers-only response, never an error.
    type Error = Infallible;
    type Future = RetryFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each attempt waits for the transport to be ready, within the call's deadline.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> RetryFuture {
        Box::pin(attempts(
            self.inner.clone(),
            Arc::clone(&self.calls),
            self.timeout,
            request,
        ))
    }
}

/// One logical call: attempts until one commits or succeeds, fails for good, or the deadline
/// passes.
async fn attempts<S, B>(
    mut inner: S,
    calls: Arc<Calls>,
    timeout: Duration,
    request: http::Request<tonic::body::Body>,
) -> Result<http::Response<tonic::body::Body>, Infallible>
where
    S: tower::Service<http::Request<ReplayBody>, Response = http::Response<B>>,
    S::Error: std::error::Error + Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut parts, body) = request.into_parts();
    let timeout = telemetry::grpc::grpc_timeout(&parts.headers).unwrap_or(timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let attributes = parts
        .extensions
        .remove::<SpanAttributes>()
        .map(|SpanAttributes(attributes)| attributes)
        .unwrap_or_default();
    let call = calls.layer.start_call(parts.uri.path(), attributes);
    let replay = Replay::new(body, RETRY_BUFFER_BYTES).await;
    let mut backoff = Duration::from_millis(calls.settings.initial_backoff_ms);
    let mut number = 1;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let mut attempt = http::Request::new(replay.attempt(number));
        *attempt.method_mut() = parts.method.clone();
        *attempt.uri_mut() = parts.uri.clone();
        *attempt.version_mut() = parts.version;
        *attempt.headers_mut() = parts.headers.clone();
        *attempt.extensions_mut() = parts.extensions.clone();
        let headers = attempt.headers_mut();
        headers.insert(GRPC_TIMEOUT, grpc_timeout(left));
        if number > 1 {
            headers.insert(
                GRPC_PREVIOUS_RPC_ATTEMPTS,
                http::HeaderValue::from(number - 1),
            );
        }
        attempt.extensions_mut().insert(Attempt {
            number,
            call: call.clone(),
        });
        let sent = async { inner.ready().await?.call(attempt).await };
        let outcome = tokio::time::timeout_at(deadline, sent)
            .instrument(call.span().clone())
            .await;
        let status = match outcome {
            // Response headers without a status: the call is committed to this attempt, whose
            // end ends the call.
            Ok(Ok(response)) if !response.headers().contains_key(GRPC_STATUS) => {
                calls.succeeded();
                return Ok(response.map(|body| {
                    tonic::body::Body::new(StreamDeadline::new(body, deadline, timeout))
                }));
            }
            Ok(Ok(response)) => match tonic::Status::from_header_map(response.headers()) {
                Some(status) if status.code() == Code::Ok => {
                    calls.succeeded();
                    call.end(&status);
                    return Ok(response.map(tonic::body::Body::new));
                }
                Some(status) => status,
                None => tonic::Status::internal("the server's grpc-status is not a status"),
            },
            // A connection that broke before any response (a replica killed mid-call), or none
            // to be had: gRPC calls that UNAVAILABLE. The reason is in the error's sources.
            Ok(Err(error)) => tonic::Status::unavailable(crate::error_chain(&error)),
            // The deadline passed while the attempt was on its way.
            Err(_) => tonic::Status::deadline_exceeded(String::new()),
        };
        // The deadline passed: tonic says CANCELLED ("Timeout expired"), or our timer fired
        // first; either way the call's deadline is what ended it.
        let status = if tokio::time::Instant::now() >= deadline {
            tonic::Status::deadline_exceeded(format!("the call's deadline ({timeout:?}) passed"))
        } else {
            status
        };
        let committed = replay.overflowed() || call.committed();
        let method = parts.uri.path().trim_start_matches('/');
        match calls.next_attempt(method, committed, number, &status, &mut backoff, deadline) {
            Some(delay) => {
                tokio::time::sleep(delay)
                    .instrument(call.span().clone())
                    .await;
                number += 1;
            }
            None => {
                call.end(&status);
                return Ok(status.into_http());
            }
        }
    }
}

/// `grpc-timeout` for `left`: microseconds while they fit the 8 digits gRPC allows (100 s), else
/// milliseconds, else seconds. Written by hand, once per attempt: `format!` and a `String` cost a
/// call about as much as the rest of the header's handling.
fn grpc_timeout(left: Duration) -> http::HeaderValue {
    let micros = u64::try_from(left.as_micros()).unwrap_or(u64::MAX);
    let (mut amount, unit) = if micros < 100_000_000 {
        (micros, b'u')
    } else if micros / 1000 < 100_000_000 {
        (micros / 1000, b'm')
    } else {
        (left.as_secs().min(99_999_999), b'S')
    };
    // At most 8 digits, then the unit, written from the end.
    let mut text = [b'0'; 9];
    let mut start = text.len() - 1;
    text[start] = unit;
    loop {
        start -= 1;
        // `amount % 10` is a digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (amount % 10) as u8;
        text[start] = b'0' + digit;
        amount /= 10;
        if amount == 0 {
            break;
        }
    }
    http::HeaderValue::from_bytes(&text[start..])
        .unwrap_or_else(|_| unreachable!("digits and a unit letter are a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_stops_retries_below_half_and_refills_by_the_ratio() {
        let throttle = Throttle::new(10, 0.1);
        assert!(throttle.allows_retry());
        for _ in 0..5 {
            throttle.failed();
        }
        assert!(!throttle.allows_retry(), "5 of 10 left: not more than half");
        throttle.succeeded();
        assert!(throttle.allows_retry(), "5.1 of 10");
        for _ in 0..20 {
            throttle.failed();
        }
        assert_eq!(throttle.tokens.load(Ordering::Relaxed), 0, "never below 0");
        for _ in 0..200 {
            throttle.succeeded();
        }
        assert_eq!(
            throttle.tokens.load(Ordering::Relaxed),
            10_000,
            "never above the bucket"
        );
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_millis(100);
        for _ in 0..1000 {
            let delay = jittered(base);
            assert!(
                (Duration::from_millis(80)..=Duration::from_millis(120)).contains(&delay),
                "{delay:?}"
            );
        }
    }

    #[test]
    fn pushback_is_a_delay_absent_or_a_refusal() {
        let status = |value: Option<&'static str>| {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(value) = value {
                metadata.insert("grpc-retry-pushback-ms", value.parse().expect("ascii"));
            }
            tonic::Status::with_metadata(Code::Unavailable, "busy", metadata)
        };
        assert_eq!(pushback(&status(None)), None);
        assert_eq!(
            pushback(&status(Some("250"))),
            Some(Some(Duration::from_millis(250)))
        );
        for refusal in ["-1", "soon", "1.5"] {
            assert_eq!(pushback(&status(Some(refusal))), Some(None), "{refusal}");
        }
    }

    #[test]
    fn settings_are_checked_and_attempts_capped() {
        let capped = CallSettings {
            max_attempts: 9,
            ..CallSettings::default()
        }
        .validated()
        .expect("valid");
        assert_eq!(capped.max_attempts, MAX_ATTEMPTS_CAP);
        assert!(
            capped.check().is_ok(),
            "more attempts than the cap are not an error"
        );
        for bad in [
            CallSettings {
                max_attempts: 0,
                ..CallSettings::default()
            },
            CallSettings {
                timeout_ms: 0,
                ..CallSettings::default()
            },
            CallSettings {
                throttle_token_ratio: 0.0,
                ..CallSettings::default()
            },
            CallSettings {
                backoff_multiplier: 0.5,
                ..CallSettings::default()
            },
            CallSettings {
                max_backoff_ms: 10,
                ..CallSettings::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
            assert!(bad.clone().validated().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_keeps_to_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(grpc_timeout(Duration::from_secs(500)), "500000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(grpc_timeout(Duration::ZERO), "0u");
        assert_eq!(grpc_timeout(Duration::from_micros(99_999_999)), "99999999u");
        assert_eq!(grpc_timeout(Duration::from_secs(100)), "100000m");
        assert_eq!(grpc_timeout(Duration::MAX), "99999999S");
    }
}
