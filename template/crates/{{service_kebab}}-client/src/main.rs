//! The CLI: calls `ProcessRequest` once and prints the result and the trace id (with
//! `--method stream-results`, calls `StreamResults` and prints each result as it arrives), or,
//! with `--requests`/`--duration`, loads the server with either method and prints a summary. Its
//! log lines go to stderr, so stdout carries only the answer: readable lines on a terminal, bunyan
//! JSON otherwise (or with `--log-format json`). The SDK's own diagnostics (a collector that is
//! down, spans dropped) are said once, counted, after the answer; telemetry gets a short flush
//! budget, so a call exits about a second after its answer even when no collector listens.

// The library is named after the service; the rest of this crate calls it `client`.
extern crate {{service_snake}}_client as client;

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use client::load::{self, Amount, Call};
use opentelemetry::trace::TraceContextExt as _;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// mimalloc serves the many small, short-lived allocations of a traced call (spans, attributes,
/// JSON lines) faster than the system allocator (see the README's Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, clap::Parser)]
#[command(version, about)]
struct Args {
    /// Server URL [default: http://127.0.0.1:<the service's port>].
    #[arg(long, env = "SERVER_ADDR")]
    server: Option<String>,

    /// Request id to send (in load mode: the prefix of the ids); random when omitted.
    #[arg(long)]
    id: Option<String>,

    /// The RPC to call: `process-request` (unary) or `stream-results` (server streaming).
    #[arg(long, value_enum, default_value_t = Method::ProcessRequest)]
    method: Method,

    /// `stream-results`: how many results to ask for (the server accepts 1 to 1000) [default: 5].
    #[arg(long)]
    count: Option<u32>,

    /// `stream-results`: milliseconds the server waits between two results (at most 10000)
    /// [default: 100].
    #[arg(long)]
    interval_ms: Option<u32>,

    /// Seconds to wait for the connection.
    #[arg(long, env = "CONNECT_TIMEOUT_SECS", default_value_t = 5)]
    connect_timeout_secs: u64,

    /// Load mode: send this many calls.
    #[arg(long, conflicts_with = "duration")]
    requests: Option<u64>,

    /// Load mode: send calls for this long (30s, 500ms, 2m).
    #[arg(long, value_parser = load::parse_duration)]
    duration: Option<Duration>,

    /// Load mode: calls in flight at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// Load mode: print the summary as one JSON line.
    #[arg(long)]
    json: bool,

    /// TLS (for an https:// --server): the CA bundle (PEM) that signed the server's certificate;
    /// the system's roots when unset.
    #[arg(long, env = "TLS_CA_FILE")]
    tls_ca: Option<std::path::PathBuf>,

    /// Mutual TLS: the client certificate chain (PEM) to present.
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,

    /// The call deadline and the retries.
    #[command(flatten)]
    calls: client::CallSettings,

    /// Log lines on stderr: `human` (readable), `json` (bunyan, for machines) or `auto` (human
    /// when stderr is a terminal).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,

    #[command(flatten)]
    balancing: client::Balancing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Method {
    ProcessRequest,
    StreamResults,
}

impl Args {
    fn call(&self) -> Call {
        match self.method {
            Method::ProcessRequest => Call::ProcessRequest,
            Method::StreamResults => Call::StreamResults {
                count: self.count.unwrap_or(5),
                interval: Duration::from_millis(u64::from(self.interval_ms.unwrap_or(100))),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
}

/// How long the CLI waits for its telemetry to be delivered once it has its answer; a server
/// keeps the telemetry crate's full budget.
const FLUSH_BUDGET: Duration = Duration::from_millis(800);

fn tls(args: &Args) -> client::Tls {
    client::Tls {
        ca: args.tls_ca.clone(),
        cert: args.tls_cert.clone(),
        key: args.tls_key.clone(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.method == Method::ProcessRequest && (args.count.is_some() || args.interval_ms.is_some())
    {
        <Args as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--count and --interval-ms apply to --method stream-results only",
            )
            .exit();
    }
    if let Err(error) = args.calls.check() {
        <Args as clap::CommandFactory>::command()
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
    let service_name = format!("{}-client", proto::SERVICE_NAME);
    // Load mode writes no line per call unless RUST_LOG asks: at thousands of calls a second the
    // lines would cost the CPU the server under test needs. Spans are recorded either way.
    let load = args.requests.is_some() || args.duration.is_some();
    let human = match args.log_format {
        LogFormat::Auto => std::io::stderr().is_terminal(),
        LogFormat::Human => true,
        LogFormat::Json => false,
    };
    let telemetry = runtime.block_on(async {
        telemetry::Telemetry::builder(&service_name, env!("CARGO_PKG_VERSION"))
            .writer(tracing_subscriber::fmt::writer::BoxMakeWriter::new(
                std::io::stderr,
            ))
            .human_lines(human)
            .defer_diagnostics(true)
            .shutdown_budget(FLUSH_BUDGET)
            .env(move |name| match std::env::var(name) {
                Err(_) if load && name == "RUST_LOG" => Some("warn".to_owned()),
                value => value.ok(),
            })
            .init()
    });
    let telemetry = match telemetry {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("error: cannot start telemetry: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let amount = match (args.requests, args.duration) {
            (Some(n), _) => Some(Amount::Requests(n)),
            (None, Some(d)) => Some(Amount::Duration(d)),
            (None, None) => None,
        };
        match amount {
            Some(amount) => load_server(&args, amount).await,
            None => call_once(&args).await,
        }
    });
    // Flush telemetry from this thread, not a runtime worker: dropping the guard blocks.
    drop(telemetry);
    code
}

fn server(args: &Args) -> String {
    args.server
        .clone()
        .unwrap_or_else(|| format!("http://127.0.0.1:{}", proto::DEFAULT_PORT))
}

async fn connect(args: &Args, timeout: Duration) -> Result<client::Client, client::ConnectError> {
    client::Client::connect_balanced(&server(args), timeout, &tls(args), &args.balancing).await
}

async fn call_once(args: &Args) -> ExitCode {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let timeout = Duration::from_secs(args.connect_timeout_secs);

    // The trace starts here, so its id can be printed whether the call succeeds or not.
    let span = match args.method {
        Method::ProcessRequest => tracing::info_span!("cli.process_request"),
        Method::StreamResults => tracing::info_span!("cli.stream_results"),
    };
    let trace_id = span.context().span().span_context().trace_id();
    let describe = |status: tonic::Status| {
        // A transport error (a TLS alert, say) is UNKNOWN "transport error": the reason is in
        // its source.
        let mut cause = String::new();
        let mut source = std::error::Error::source(&status);
        while let Some(error) = source {
            cause.push_str(&format!(": {error}"));
            source = error.source();
        }
        format!(
            "{}: {}{cause}",
            telemetry::grpc::code_name(status.code()),
            status.message()
        )
    };
    let outcome = async {
        let mut client = connect(args, timeout)
            .await
            .map_err(|e| e.to_string())?
            .with_settings(args.calls.clone())
            .map_err(|e| e.to_string())?;
        match args.call() {
            Call::ProcessRequest => {
                let response = client.process_request(id).await.map_err(describe)?;
                println!("result: {}", response.result);
            }
            // Each result is printed as it arrives; an error after some ends the stream.
            Call::StreamResults { count, interval } => {
                let mut stream = client
                    .stream_results(id, count, interval)
                    .await
                    .map_err(describe)?;
                while let Some(result) = stream.message().await.map_err(describe)? {
                    println!("result {}: {}", result.sequence, result.result);
                }
            }
        }
        Ok::<_, String>(())
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

async fn load_server(args: &Args, amount: Amount) -> ExitCode {
    let timeout = Duration::from_secs(args.connect_timeout_secs);
    let client = match connect(args, timeout)
        .await
        .map_err(|e| e.to_string())
        .and_then(|c| {
            c.with_settings(args.calls.clone())
                .map_err(|e| e.to_string())
        }) {
        Ok(client) => client,
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
        &client,
        args.call(),
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
