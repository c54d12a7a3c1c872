//! What every service's command-line client shares: the flags (server, TLS, deadline and retries,
//! balancing, load mode, log format), the telemetry a short-lived process needs, and the two
//! modes. One call prints its answer and the trace id; with `--requests`/`--duration` the CLI
//! loads the server and prints a summary. Log lines go to stderr, so stdout carries only the
//! answer: readable lines on a terminal, bunyan JSON otherwise (or with `--log-format json`). The
//! SDK's own diagnostics (a collector that is down, spans dropped) are said once, counted, after
//! the answer; telemetry gets a short flush budget, so a call exits about a second after its
//! answer even when no collector listens.
//!
//! What a service's CLI adds is its own: the flags that choose its calls, and a [`Calls`] that
//! makes them.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::load::{self, Amount};
use crate::{Balancing, CallSettings, Connection, ServiceInfo, Tls};

/// The flags of every service's CLI; a CLI flattens them into its own arguments
/// (`#[command(flatten)]`) beside the flags that choose its calls.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Server URL [default: http://127.0.0.1:<the service's port>].
    #[arg(long, env = "SERVER_ADDR")]
    pub server: Option<String>,

    /// Request id to send (in load mode: the prefix of the ids); random when omitted.
    #[arg(long)]
    pub id: Option<String>,

    /// Seconds to wait for the connection.
    #[arg(long, env = "CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    pub connect_timeout_secs: u64,

    /// Load mode: send this many calls.
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<u64>,

    /// Load mode: send calls for this long (30s, 500ms, 2m).
    #[arg(long, value_parser = load::parse_duration)]
    pub duration: Option<Duration>,

    /// Load mode: calls in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Load mode: print the summary as one JSON line.
    #[arg(long)]
    pub json: bool,

    /// TLS (for an https:// --server): the CA bundle (PEM) that signed the server's certificate;
    /// the system's roots when unset.
    #[arg(long, env = "TLS_CA_FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Mutual TLS: the client certificate chain (PEM) to present.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The call deadline and the retries.
    #[command(flatten)]
    pub calls: CallSettings,

    /// Log lines on stderr: `human` (readable), `json` (bunyan, for machines) or `auto` (human
    /// when stderr is a terminal).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub balancing: Balancing,
}

/// How the CLI writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines when stderr is a terminal, bunyan JSON otherwise.
    Auto,
    /// Readable lines.
    Human,
    /// Bunyan JSON lines.
    Json,
}

/// The service a CLI calls, and what its telemetry is named.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The service as the shared machinery knows it.
    pub service: ServiceInfo,
    /// `service.name` of the CLI's telemetry (`<service>-client`).
    pub name: &'a str,
    /// `service.version` of the CLI's telemetry.
    pub version: &'a str,
    /// The port of `--server`'s default, `http://127.0.0.1:<port>`.
    pub default_port: u16,
}

/// A service's calls, as its CLI makes them: one call printed ([`Calls::once`]), or many,
/// measured ([`Calls::call`]). A value says which method, with which arguments.
pub trait Calls: Clone + Send + Sync + 'static {
    /// The service's typed client.
    type Client: From<Connection> + Clone + Send + Sync + 'static;

    /// The root span of one call from the command line: the trace whose id the CLI prints.
    fn span(&self) -> tracing::Span;

    /// Makes one call with request id `id`, printing its answer on stdout as it arrives.
    fn once(
        &self,
        client: &mut Self::Client,
        id: String,
    ) -> impl Future<Output = Result<(), tonic::Status>> + Send;

    /// Makes one call of the load with request id `id`.
    fn call(
        &self,
        client: &mut Self::Client,
        id: String,
    ) -> impl Future<Output = load::Outcome> + Send;

    /// Whether the calls stream (the load's summary then counts the messages).
    fn streams(&self) -> bool;
}

/// A load worker: the calls and a client of its own.
#[derive(Clone)]
struct Worker<C: Calls> {
    calls: C,
    client: C::Client,
}

impl<C: Calls> load::Caller for Worker<C> {
    async fn call(&mut self, id: String) -> load::Outcome {
        self.calls.call(&mut self.client, id).await
    }

    fn streams(&self) -> bool {
        self.calls.streams()
    }
}

/// How long the CLI waits for its telemetry to be delivered once it has its answer; a server
/// keeps the telemetry crate's full budget.
pub const FLUSH_BUDGET: Duration = Duration::from_millis(800);

/// Runs a service's CLI: checks `args` (a bad value exits 2 with clap's usage of `A`, the CLI's
/// own arguments), starts the runtime and the telemetry, connects to `target` and makes one call
/// or, in load mode, many of `calls`.
pub fn run<A: clap::CommandFactory, C: Calls>(
    args: &Args,
    target: Target<'_>,
    calls: C,
) -> ExitCode {
    if let Err(error) = args.calls.check() {
        A::command()
            .error(clap::error::ErrorKind::ValueValidation, error)
            .exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the Tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let amount = match (args.requests, args.duration) {
        (Some(n), _) => Some(Amount::Requests(n)),
        (None, Some(d)) => Some(Amount::Duration(d)),
        (None, None) => None,
    };
    let telemetry = match runtime.block_on(start_telemetry(args, target, amount.is_some())) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        match amount {
            Some(amount) => load_server(args, target, calls, amount).await,
            None => call_once(args, target, calls).await,
        }
    });
    // Flush telemetry from this thread, not a runtime worker: dropping the guard blocks.
    drop(telemetry);
    code
}

async fn start_telemetry(
    args: &Args,
    target: Target<'_>,
    load: bool,
) -> Result<telemetry::TelemetryGuard, telemetry::InitError> {
    let human = match args.log_format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Human => true,
        LogFormat::Json => false,
    };
    telemetry::Telemetry::builder(target.name, target.version)
        .writer(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
            std::io::stderr,
        ))
        .human_lines(human)
        .defer_diagnostics(true)
        .shutdown_budget(FLUSH_BUDGET)
        // Load mode writes no line per call unless RUST_LOG asks: at thousands of calls a second
        // the lines would cost the CPU the server under test needs. Spans are recorded either way.
        .env(move |name| match std::env::var(name) {
            Err(_) if load && name == "RUST_LOG" => Some("warn".to_owned()),
            value => value.ok(),
        })
        .init()
}

/// Connects as the flags say, with their deadline and retry settings.
async fn connect(args: &Args, target: Target<'_>) -> Result<Connection, String> {
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", target.default_port));
    let tls = Tls {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    };
    let timeout = Duration::from_secs(args.connect_timeout_secs);
    Connection::connect_balanced(target.service, &server, timeout, &tls, &args.balancing)
        .await
        .map_err(|e| e.to_string())?
        .with_settings(args.calls.clone())
        .map_err(|e| e.to_string())
}

/// A status as the CLI reports it: its code's name, its message, and its sources (a transport
/// error, a TLS alert say, is UNKNOWN "transport error": the reason is in its source).
pub fn describe(status: &tonic::Status) -> String {
    let mut text = format!(
        "{}: {}",
        telemetry::grpc::code_name(status.code()),
        status.message()
    );
    if let Some(source) = std::error::Error::source(status) {
        text.push_str(": ");
        text.push_str(&crate::error_chain(source));
    }
    text
}

async fn call_once<C: Calls>(args: &Args, target: Target<'_>, calls: C) -> ExitCode {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // The trace starts here, so its id can be printed whether the call succeeds or not.
    let span = calls.span();
    let trace_id = span.context().span().span_context().trace_id();
    let outcome = async {
        let mut client = C::Client::from(connect(args, target).await?);
        calls
            .once(&mut client, id)
            .await
            .map_err(|status| describe(&status))
    }
    .instrument(span)
    .await;
    match outcome {
        Ok(()) => {
            println!("trace_id: {trace_id}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!("trace_id: {trace_id}");
            ExitCode::FAILURE
        }
    }
}

async fn load_server<C: Calls>(
    args: &Args,
    target: Target<'_>,
    calls: C,
    amount: Amount,
) -> ExitCode {
    let worker = match connect(args, target).await {
        Ok(connection) => Worker {
            calls,
            client: connection.into(),
        },
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let progress = progress_bar(amount);
    let tick = progress.clone();
    let prefix = args
        .id
        .clone()
        .unwrap_or_else(|| format!("load-{}-", &uuid::Uuid::new_v4().simple().to_string()[..8]));
    let summary = load::run(
        &worker,
        amount,
        usize::from(args.concurrency),
        &prefix,
        move || tick.inc(1),
    )
    .await;
    progress.finish_and_clear();
    if args.json {
        println!("{}", summary.to_json());
    } else {
        println!("{summary}");
    }
    if summary.ok == summary.requests {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A bar on a terminal; nothing when stderr is a pipe or a file (CI logs stay clean).
fn progress_bar(amount: Amount) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match amount {
        Amount::Requests(n) => indicatif::ProgressBar::new(n),
        Amount::Duration(_) => indicatif::ProgressBar::new_spinner(),
    };
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} calls {per_sec} [{elapsed}]")
    {
        bar.set_style(style);
    }
    bar
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    /// A CLI with nothing of its own.
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        common: super::Args,
    }

    /// Bad balancing settings are refused at start, naming the flag.
    #[test]
    fn bad_balancing_settings_are_refused_naming_the_flag() {
        for (args, flag) in [
            (&["--lb", "round-robin"][..], "--lb"),
            (&["--dns-refresh-secs", "0"][..], "--dns-refresh-secs"),
            (&["--keepalive-secs", "0"][..], "--keepalive-secs"),
            (&["--dns-server", "not-an-ip"][..], "--dns-server"),
            (&["--concurrency", "0"][..], "--concurrency"),
            (&["--duration", "soon"][..], "--duration"),
            (&["--tls-cert", "client.pem"][..], "--tls-key"),
        ] {
            let error = Cli::try_parse_from(std::iter::once("cli").chain(args.iter().copied()))
                .expect_err(&format!("{args:?} is refused"));
            assert!(error.to_string().contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn load_mode_is_asked_with_a_count_or_a_duration_not_both() {
        let error = Cli::try_parse_from(["cli", "--requests", "5", "--duration", "1s"])
            .expect_err("--requests and --duration together are refused");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
        let cli = Cli::try_parse_from(["cli", "--duration", "500ms"]).expect("a duration");
        assert_eq!(cli.common.duration, Some(super::Duration::from_millis(500)));
    }
}
