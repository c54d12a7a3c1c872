//! Load mode: many concurrent calls over one connection, an HDR latency histogram, and a summary
//! of throughput, errors by status code and latency percentiles. Light enough to load a server on
//! the same two-core machine. A streaming call counts as one call, measured to its stream's end.
//! Which call is made is the service's own: a [`Caller`] (its typed client and the method chosen).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// How much load to send.
#[derive(Clone, Copy, Debug)]
pub enum Amount {
    /// Exactly this many calls.
    Requests(u64),
    /// As many calls as fit in this time.
    Duration(Duration),
}

/// How one call of the load ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Streamed messages received (0 for a unary call).
    pub messages: u64,
    /// How it failed; `None` when it succeeded.
    pub error: Option<tonic::Status>,
}

impl Outcome {
    /// A unary call's outcome.
    pub fn of<T>(result: Result<T, tonic::Status>) -> Self {
        Self {
            messages: 0,
            error: result.err(),
        }
    }

    /// A streaming call read to its end: how many messages it brought, and how it failed.
    pub async fn of_stream<T>(stream: Result<tonic::Streaming<T>, tonic::Status>) -> Self {
        let mut outcome = Self::default();
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(status) => {
                outcome.error = Some(status);
                return outcome;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(_)) => outcome.messages += 1,
                Ok(None) => return outcome,
                Err(status) => {
                    outcome.error = Some(status);
                    return outcome;
                }
            }
        }
    }
}

/// One call of the load, as the service makes it: a typed client and the method to call. Each
/// worker has a clone of its own.
pub trait Caller: Clone + Send + Sync + 'static {
    /// Makes one call with request id `id`.
    fn call(&mut self, id: String) -> impl Future<Output = Outcome> + Send;

    /// Whether the calls stream (the summary then counts the messages).
    fn streams(&self) -> bool;
}

/// What one load run measured.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Calls completed (successful or not).
    pub requests: u64,
    /// Calls that returned OK.
    pub ok: u64,
    /// Failed calls by status code name.
    pub errors: BTreeMap<&'static str, u64>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of every call, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Streamed results received, over all calls; `None` for unary calls.
    pub messages: Option<u64>,
}

impl Summary {
    /// Completed calls per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn percentile_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The summary as one JSON object, for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "throughput_rps": self.throughput(),
            "latency_ms": {
                "p50": self.percentile_ms(0.50),
                "p90": self.percentile_ms(0.90),
                "p99": self.percentile_ms(0.99),
                "max": self.latency_us.max() as f64 / 1000.0,
            },
        });
        if let Some(messages) = self.messages {
            json["messages"] = messages.into();
        }
        json
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests: {} in {:.2}s ({:.1} req/s), ok: {}, failed: {}",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.throughput(),
            self.ok,
            self.requests - self.ok
        )?;
        match self.messages {
            Some(messages) => writeln!(f, ", results streamed: {messages}")?,
            None => writeln!(f)?,
        }
        for (code, count) in &self.errors {
            writeln!(f, "  {code}: {count}")?;
        }
        write!(
            f,
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.percentile_ms(0.50),
            self.percentile_ms(0.90),
            self.percentile_ms(0.99),
            self.latency_us.max() as f64 / 1000.0
        )
    }
}

/// Sends `amount` calls of `caller` with `concurrency` in flight; `on_done` runs after each call
/// (progress).
pub async fn run<C: Caller>(
    caller: &C,
    amount: Amount,
    concurrency: usize,
    id_prefix: &str,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Summary {
    let next = Arc::new(AtomicU64::new(0));
    let on_done = Arc::new(on_done);
    let started = Instant::now();
    let deadline = match amount {
        Amount::Duration(duration) => Some(started + duration),
        Amount::Requests(_) => None,
    };
    let limit = match amount {
        Amount::Requests(n) => n,
        Amount::Duration(_) => u64::MAX,
    };
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let mut caller = caller.clone();
            let next = Arc::clone(&next);
            let on_done = Arc::clone(&on_done);
            let id_prefix = id_prefix.to_owned();
            tokio::spawn(async move {
                let mut part = Part::new();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= limit {
                        break;
                    }
                    let call_started = Instant::now();
                    let id = format!("{id_prefix}{index}");
                    let outcome = caller.call(id).await;
                    part.messages += outcome.messages;
                    part.record(call_started.elapsed(), outcome.error.map(|s| s.code()));
                    on_done();
                }
                part
            })
        })
        .collect();

    let mut total = Part::new();
    for worker in workers {
        match worker.await {
            Ok(part) => total.merge(part),
            // A panicking call would be a bug in the client; count it rather than hide it.
            Err(_) => *total.errors.entry("CLIENT_PANIC").or_default() += 1,
        }
    }
    Summary {
        requests: total.ok + total.errors.values().sum::<u64>(),
        ok: total.ok,
        errors: total.errors,
        elapsed: started.elapsed(),
        latency_us: total.latency,
        messages: caller.streams().then_some(total.messages),
    }
}

/// One worker's share of the measurements, merged at the end so workers never contend.
struct Part {
    ok: u64,
    /// Streamed results received.
    messages: u64,
    errors: BTreeMap<&'static str, u64>,
    latency: Histogram<u64>,
}

impl Part {
    fn new() -> Self {
        Self {
            ok: 0,
            messages: 0,
            errors: BTreeMap::new(),
            // 1 µs to 1 hour at 3 significant digits; auto-resize covers anything longer.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .map(|mut h| {
                    h.auto(true);
                    h
                })
                .unwrap_or_else(|_| unreachable!("the bounds are valid")),
        }
    }

    fn record(&mut self, latency: Duration, error: Option<tonic::Code>) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self.latency.record(micros);
        match error {
            None => self.ok += 1,
            Some(code) => {
                *self
                    .errors
                    .entry(telemetry::grpc::code_name(code))
                    .or_default() += 1
            }
        }
    }

    fn merge(&mut self, other: Part) {
        self.ok += other.ok;
        self.messages += other.messages;
        for (code, count) in other.errors {
            *self.errors.entry(code).or_default() += count;
        }
        let _ = self.latency.add(other.latency);
    }
}

/// Parses `90s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        for bad in ["", "abc", "5h", "-1s", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
