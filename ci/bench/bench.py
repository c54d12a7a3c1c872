#!/usr/bin/env python3
"""What a call costs with and without telemetry: the render against a bare tonic server.

Drives three servers with h2load, one at a time, alternating their order every round:

- ``bare``: ``bare-server`` (ci/bench/bare-server), the render's proto served by plain tonic, no
  telemetry, no layers;
- ``off``: the rendered server with ``OTEL_SDK_DISABLED=true RUST_LOG=off``;
- ``full``: the rendered server with all three signals exported over OTLP/gRPC to rotel (the real
  collector), which forwards them to a receiver that only counts; JSON lines go to a file;
- ``python`` (opt-in, ``--reference``): the Python grpclib reference service (ci/bench/python-reference/server.py: grpclib and
  the OpenTelemetry Python SDK), exporting the same way as ``full``.

For each load shape it prints the medians over the rounds of req/s, p50/p99 latency (from h2load's
per-request log), server CPU µs per call (utime + stime from /proc/<pid>/stat, across the measured
calls only), the ratios between the servers, and for ``full`` the spans that reached the receiver
against the calls served (3 spans a call) with the drops the SDK reported: a faster run that
loses telemetry is not faster.

The server runs alone on CPU 0 (taskset); h2load, rotel and the receiver on the others. On a
one-core machine nothing is pinned and the table says so. This is a benchmark, not a test: it
asserts no time. Exit status: 0 when every run completed (all calls OK, every span accounted
for), 1 otherwise, 2 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import common  # noqa: E402
import h2  # noqa: E402
import procs  # noqa: E402

SPANS_PER_CALL = 3  # grpc.server.ProcessRequest, process-business-logic, database-query (the reference service's too)
CONTENDERS = ("bare", "off", "full")


def idle_class() -> list[str]:
    """The command prefix that runs a process at SCHED_IDLE, or none where chrt is missing."""
    return ["chrt", "--idle", "0"] if shutil.which("chrt") else []


@dataclass
class Shape:
    """One load: h2load's connections (-c), streams per connection (-m), and a rate (--rps per
    connection) or none for as fast as the server goes."""

    name: str
    db_latency_ms: int
    connections: int
    streams: int
    requests: int
    rps: int | None = None

    @property
    def latency(self) -> bool:
        """One call in flight: the shape measures latency, which the collector must not skew."""
        return self.connections == 1 and self.streams == 1

    def describe(self) -> str:
        rate = f", {self.rps * self.connections} req/s offered" if self.rps else ""
        collector = ", collector at SCHED_IDLE" if self.latency and idle_class() else ""
        return (f"{self.name}: DB_LATENCY_MS={self.db_latency_ms}, h2load -c {self.connections} "
                f"-m {self.streams}, {self.requests} calls{rate}{collector}")


@dataclass
class RunResult:
    contender: str
    shape: str
    round: int
    calls_ok: int = 0
    calls: int = 0
    rps: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    cpu_us_per_call: float = 0.0
    spans_expected: int | None = None
    spans_received: int | None = None
    spans_dropped: int | None = None
    problems: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    seconds = common.cpu_seconds(pid)
    if seconds is None:
        raise procs.ProcessError(f"cannot read /proc/{pid}/stat")
    return seconds


def pinned(cpus: str | None, argv: list[str]) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else argv


_FINISHED_RE = re.compile(r"finished in [\d.]+\w+, ([\d.]+) req/s")


def run_h2load(url: str, body: Path, shape: Shape, requests: int, cpus: str | None,
               log_file: Path | None, timeout: float) -> tuple[h2.H2loadResult, float, list[int]]:
    argv = [h2.tool("h2load"), "-n", str(requests), "-c", str(shape.connections), "-m", str(shape.streams)]
    if shape.rps:
        argv += ["--rps", str(shape.rps)]
    for k, v in h2.GRPC_HEADERS.items():
        argv += ["-H", f"{k}: {v}"]
    if log_file:
        argv += ["--log-file", str(log_file)]
    argv += ["-d", str(body), url]
    cp = subprocess.run(pinned(cpus, argv), capture_output=True, timeout=timeout)
    text = cp.stdout.decode(errors="replace") + cp.stderr.decode(errors="replace")
    result = h2.parse_h2load(text)
    result.returncode = cp.returncode
    m = _FINISHED_RE.search(text)
    rps = float(m.group(1)) if m else 0.0
    latencies: list[int] = []
    if log_file and log_file.exists():
        # start time (µs since epoch), HTTP status, duration (µs)
        for line in log_file.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and parts[1] == "200":
                latencies.append(int(parts[2]))
    return result, rps, latencies


def percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return float(values[min(len(values) - 1, int(q * len(values)))])


class Collector:
    """rotel receiving OTLP/gRPC from the service and exporting to a receiver that only counts."""

    def __init__(self, workdir: Path, cpus: str | None, python: str, direct: bool, idle: bool = False) -> None:
        self.workdir = workdir
        # The collector shares the load generator's CPU. One call at a time, its bursts of
        # decoding would delay h2load's next request and show up as the server's latency (by
        # ~150 µs at p99 for full telemetry, measured); at SCHED_IDLE it runs when h2load waits.
        self.cpus = cpus
        self.prefix = idle_class() if idle else []
        self.python = python
        self.direct = direct
        self.receiver: procs.ManagedProcess | None = None
        self.rotel: procs.ManagedProcess | None = None
        self.grpc_port = 0

    def start(self) -> None:
        import rotel  # the harness's launcher: finds rotel-agent

        receiver_port = procs.free_port()
        self.receiver = procs.ManagedProcess(
            pinned(self.cpus, [*self.prefix, self.python, str(HERE.parent / "e2e" / "otlp_receiver.py"),
                               "--grpc", f"127.0.0.1:{receiver_port}", "--count-only"]),
            procs.build_env(), self.workdir, "receiver").start()
        procs.wait_for_port("127.0.0.1", receiver_port, 30, proc=self.receiver)
        if self.direct:
            self.grpc_port = receiver_port
            return
        self.grpc_port = procs.free_port()
        http_port = procs.free_port()
        agent = rotel.find_rotel_agent()
        argv = [agent, "start", "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{http_port}", "--exporter", "otlp",
                "--otlp-exporter-endpoint", f"http://127.0.0.1:{receiver_port}",
                "--otlp-exporter-protocol", "grpc", "--otlp-exporter-compression", "none",
                "--pid-file", str(self.workdir / "rotel.pid"), "--log-file", str(self.workdir / "rotel.log")]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        self.rotel = procs.ManagedProcess(pinned(self.cpus, [*self.prefix, *argv]), env, self.workdir, "rotel").start()
        procs.wait_for_port("127.0.0.1", self.grpc_port, 30, proc=self.rotel)

    def stop(self) -> dict[str, int]:
        """Stops rotel (it flushes what it holds), then the receiver; returns its totals."""
        if self.rotel:
            self.rotel.stop(signal.SIGTERM, timeout=20)
        totals: dict[str, int] = {}
        if self.receiver:
            self.receiver.stop(signal.SIGTERM, timeout=20)
            for line in reversed(self.receiver.stdout_text().splitlines()):
                if line.startswith("{"):
                    totals = json.loads(line)
                    break
        return totals


def dropped_spans(stdout_path: Path) -> int:
    """Spans the SDK said it dropped (its shutdown report), from the server's JSON lines."""
    return common.dropped_counts(common.read_records(stdout_path)).get("spans", 0)


def reference_dropped_spans(stderr_path: Path) -> int:
    """Spans the Python SDK dropped: it warns once per dropped span ("Queue full, dropping span."),
    and the reference service's log format, which needs trace_id, turns each SDK warning into a logging error
    that prints the message and its arguments."""
    text = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    return (text.count("Queue full, dropping span.")
            + len(re.findall(r"Message: 'Queue full, dropping %s\.'\nArguments: \('span',\)", text)))


def reference_stubs(python: str, workdir: Path) -> Path:
    """myservice_pb2.py and myservice_grpc.py (the names the reference service imports), generated by
    grpcio-tools' protoc and grpclib's plugin from the render's proto (examples/default's copy)."""
    out = workdir / "reference-stubs"
    out.mkdir(exist_ok=True)
    proto = HERE.parent.parent / "examples/default/crates/my-service-proto/proto/myservice/v1/my_service.proto"
    shutil.copy(proto, out / "myservice.proto")
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([python, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpclib_python_out=.",
                    "myservice.proto"], cwd=out, env=env, check=True)
    return out


def run_one(args: argparse.Namespace, contender: str, shape: Shape, rnd: int, body: Path,
            workdir: Path) -> RunResult:
    r = RunResult(contender, shape.name, rnd)
    run_dir = workdir / f"{shape.name}-{contender}-{rnd}"
    run_dir.mkdir(parents=True)
    env = {"DB_LATENCY_MS": str(shape.db_latency_ms), "DRAIN_TIMEOUT_SECS": "5", "DRAIN_DELAY_SECS": "0"}
    collector = None
    # "off@NAME" / "full@NAME": the server of --compare NAME=DIR, for before/after measurements.
    # "full#NAME": full telemetry with the extra environment of --lever NAME=K=V,...
    contender_mode, _, lever = contender.partition("#")
    mode, _, variant = contender_mode.partition("@")
    bin_dir = args.compare[variant] if variant else args.bin_dir
    if mode == "bare":
        argv = [str(bin_dir / "bare-server")]
    elif mode == "python":
        argv = [args.reference_python, str(HERE / "python-reference" / "server.py")]
        env["PYTHONPATH"] = str(args.reference_stubs)
    else:
        argv = [str(bin_dir / "my-service-server")]
    if mode == "off":
        env |= {"OTEL_SDK_DISABLED": "true", "RUST_LOG": "off"}
    elif mode in ("full", "python"):
        collector = Collector(run_dir, args.load_cpus, args.python, args.direct, idle=shape.latency)
        collector.start()
        env |= {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.grpc_port}"}
    if lever:
        env |= args.levers[lever]
    port = procs.free_port()
    full_env = procs.build_env({**env, "LISTEN_ADDR": f"127.0.0.1:{port}"})
    server = procs.ManagedProcess(pinned(args.server_cpus, argv), full_env, run_dir, "server").start()
    try:
        procs.wait_for_port("127.0.0.1", port, 30, proc=server)
        url = f"http://127.0.0.1:{port}{h2.PROCESS_PATH}"
        warm, _, _ = run_h2load(url, body, shape, args.warmup, args.load_cpus, None, args.timeout)
        before = cpu_seconds(server.pid)
        res, rps, latencies = run_h2load(url, body, shape, args.requests_for(shape), args.load_cpus,
                                         run_dir / "h2load.log", args.timeout)
        after = cpu_seconds(server.pid)
        r.calls = res.total
        r.calls_ok = res.succeeded
        r.rps = rps
        r.p50_us = percentile(latencies, 0.50)
        r.p99_us = percentile(latencies, 0.99)
        r.cpu_us_per_call = (after - before) * 1e6 / max(1, res.succeeded)
        if not res.all_2xx or not warm.all_2xx:
            r.problems.append(f"h2load: {res.succeeded}/{res.total} OK, warm-up {warm.succeeded}/{warm.total}")
        served = res.succeeded + warm.succeeded
    finally:
        # The reference service has no SIGTERM handler (SIGTERM would lose its queued telemetry); on SIGINT
        # asyncio.run ends, the SDK's atexit hooks flush, and Python exits by re-raising SIGINT.
        code = server.stop(signal.SIGTERM if mode not in ("bare", "python") else signal.SIGINT, timeout=30)
    if mode == "python" and code == -signal.SIGKILL:
        # Seen after 20k-call runs: its spans had all arrived, but the process did not exit
        # within 30 s of SIGINT. Its telemetry is still checked below; the exit is only reported.
        print(f"  note: the reference service did not exit within 30 s of SIGINT and was killed ({run_dir})")
    elif code != 0 and not (mode == "python" and code == -signal.SIGINT):
        r.problems.append(f"server exited with {code}")
    if collector:
        totals = collector.stop()
        r.spans_expected = SPANS_PER_CALL * served
        r.spans_received = totals.get("spans")
        r.spans_dropped = (reference_dropped_spans(server.stderr_path) if mode == "python"
                           else dropped_spans(server.stdout_path))
        r.problems += span_problems(r.spans_received, r.spans_dropped, r.spans_expected,
                                    sampled="OTEL_TRACES_SAMPLER" in env)
    if not args.keep:
        for p in run_dir.glob("*.log"):
            p.unlink()
    return r


def span_problems(received: int | None, dropped: int, expected: int, sampled: bool = False) -> list[str]:
    """Every span produced must have reached the receiver or been counted as dropped by the SDK:
    a run that loses telemetry silently is not a faster run. A sampling lever exports fewer by
    design; only a missing report is a problem then."""
    if received is None:
        return ["the receiver reported no totals"]
    if sampled or received + dropped == expected:
        return []
    return [f"spans: {received} received + {dropped} reported dropped != {expected} produced"]


def median(results: list[RunResult], attr: str) -> float:
    values = [getattr(r, attr) for r in results if getattr(r, attr) is not None]
    return statistics.median(values) if values else 0.0


def report(shapes: list[Shape], results: list[RunResult], pinning: str, contenders: list[str]) -> str:
    lines = [f"pinning: {pinning}"]
    for shape in shapes:
        lines.append("")
        lines.append(shape.describe())
        lines.append(f"{'server':<12} {'req/s':>9} {'p50 µs':>8} {'p99 µs':>8} {'CPU µs/call':>11}  spans received")
        by = {c: [r for r in results if r.shape == shape.name and r.contender == c] for c in contenders}
        for c in contenders:
            rs = by[c]
            if not rs:
                continue
            spans = ""
            if c.startswith("full") or c == "python":
                spans = "  ".join(
                    f"{r.spans_received}/{r.spans_expected}" + (f" (+{r.spans_dropped} dropped)" if r.spans_dropped else "")
                    for r in rs)
            lines.append(f"{c:<12} {median(rs, 'rps'):>9.0f} {median(rs, 'p50_us'):>8.0f} {median(rs, 'p99_us'):>8.0f} "
                         f"{median(rs, 'cpu_us_per_call'):>11.1f}  {spans}")

        def ratio(a: str, b: str, attr: str = "rps") -> str:
            x, y = median(by.get(a, []), attr), median(by.get(b, []), attr)
            return f"{x / y:.2f}" if x and y else "n/a"

        if shape.rps:
            if by.get("full") and by.get("bare"):
                p50 = median(by["full"], "p50_us") - median(by["bare"], "p50_us")
                p99 = median(by["full"], "p99_us") - median(by["bare"], "p99_us")
                lines.append(f"latency added by full telemetry over bare: p50 {p50:.0f} µs, p99 {p99:.0f} µs")
        elif shape.connections == shape.streams == 1:
            if by.get("full") and by.get("off"):
                p50 = median(by["full"], "p50_us") - median(by["off"], "p50_us")
                p99 = median(by["full"], "p99_us") - median(by["off"], "p99_us")
                lines.append(f"latency added by full telemetry over off (the same binary), one call at a time: "
                             f"p50 {p50:.0f} µs, p99 {p99:.0f} µs")
        else:
            lines.append(f"ratios (req/s): full/bare {ratio('full', 'bare')}, full/off {ratio('full', 'off')}, "
                         f"off/bare {ratio('off', 'bare')}")
            if by.get("python"):
                lines.append(f"ratio to the Python grpclib reference service (req/s): full/python {ratio('full', 'python')}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", type=Path, required=True, help="holds my-service-server and bare-server")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=40000, help="measured calls per run at full speed")
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--shapes", default="0ms,10ms,1000rps,serial",
                   help="comma-separated: 0ms, 10ms, 1000rps, serial (h2load -c 1 -m 1)")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=DIR",
                   help="also run off@NAME and full@NAME with DIR's my-service-server (before/after)")
    p.add_argument("--lever", action="append", default=[], metavar="NAME=K=V[,K=V]",
                   help="also run full#NAME: full telemetry with this extra environment "
                        "(e.g. sampled=OTEL_TRACES_SAMPLER=traceidratio,OTEL_TRACES_SAMPLER_ARG=0.1)")
    p.add_argument("--only", default=",".join(CONTENDERS), help="comma-separated contenders")
    p.add_argument("--quick", action="store_true", help="one round, few calls: proves the benchmark runs")
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path, help="write every run's figures here")
    p.add_argument("--keep", action="store_true", help="keep h2load's per-request logs")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--direct", action="store_true",
                   help="the server exports straight to the counting receiver, without rotel in between")
    p.add_argument("--reference", action="store_true",
                   help="also run the Python grpclib reference service (ci/bench/python-reference; its venv: ci/lib.sh ensure_python_reference_venv)")
    reference_venv = os.environ.get("PYREF_VENV") or Path.home() / ".cache/cg-template/python-reference-venv"
    p.add_argument("--reference-python", default=str(Path(reference_venv) / "bin/python"),
                   help="python with grpclib, grpcio-tools and the OpenTelemetry SDK (default: $PYREF_VENV's)")
    p.add_argument("--python", default=sys.executable, help="python for the receiver (needs opentelemetry-proto, grpcio)")
    args = p.parse_args()
    if args.quick:
        args.rounds, args.requests, args.warmup = 1, 3000, 300

    all_shapes = {
        "0ms": Shape("0ms", 0, 4, 25, args.requests),
        # The reference service's setting: a 10 ms query, 1000 streams.
        "10ms": Shape("10ms", 10, 10, 100, args.requests),
        # Moderate load: 1000 req/s for the latency telemetry adds.
        "1000rps": Shape("1000rps", 0, 1, 1, min(args.requests, 10000) // (4 if args.quick else 1), rps=1000),
        # One call at a time, as fast as they come back: the tail that the telemetry's own threads
        # (export batches, the stdout writer) add when they share the request's core.
        "serial": Shape("serial", 0, 1, 1, min(args.requests, 10000) // (4 if args.quick else 1)),
    }
    shapes = [all_shapes[s] for s in args.shapes.split(",")]
    args.compare = dict((name, Path(d)) for name, _, d in (c.partition("=") for c in args.compare))
    args.levers = {}
    for lever in args.lever:
        name, _, assignments = lever.partition("=")
        args.levers[name] = dict(kv.split("=", 1) for kv in assignments.split(",") if "=" in kv)
    known = list(CONTENDERS) + [f"{m}@{n}" for n in args.compare for m in ("off", "full")]
    known += [f"full#{n}" for n in args.levers]
    if args.reference:
        known.append("python")
        args.only += ",python"
    only = args.only.split(",")
    contenders = [c for c in known if c in only or re.split("[@#]", c)[0] in only]
    args.requests_for = lambda shape: shape.requests

    for binary in {"bare": "bare-server", "off": "my-service-server", "full": "my-service-server"}.values():
        if not (args.bin_dir / binary).exists():
            print(f"error: {args.bin_dir / binary} does not exist (run ci/bench.sh)", file=sys.stderr)
            return 2
    if "python" in contenders and not Path(args.reference_python).exists():
        print(f"error: {args.reference_python} does not exist (ci/lib.sh ensure_python_reference_venv installs it)", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    if cpus >= 2 and shutil.which("taskset"):
        args.server_cpus, args.load_cpus = "0", f"1-{cpus - 1}" if cpus > 2 else "1"
        pinning = f"server on CPU 0; h2load, rotel and the receiver on CPU {args.load_cpus}"
    else:
        args.server_cpus = args.load_cpus = None
        pinning = "none: one CPU, the server shares it with h2load and the collector (figures are lower)"

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    body = workdir / "request.bin"
    body.write_bytes(h2.grpc_frame(h2.my_request("bench-0001")))
    if "python" in contenders:
        args.reference_stubs = reference_stubs(args.reference_python, workdir)
    print(pinning)
    for shape in shapes:
        print(shape.describe())
    results: list[RunResult] = []
    for rnd in range(args.rounds):
        for shape in shapes:
            # Rotate the order every round so no contender always runs first (or warmest).
            order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]
            for c in order:
                if c == "python" and (shape.rps or shape.connections == shape.streams == 1):
                    continue  # the fixed-rate and serial shapes measure what telemetry adds to the render's latency
                try:
                    r = run_one(args, c, shape, rnd, body, workdir)
                except (procs.ProcessError, subprocess.TimeoutExpired, OSError) as e:
                    print(f"error: {c} {shape.name} round {rnd}: {e}", file=sys.stderr)
                    return 2
                results.append(r)
                print(f"  round {rnd} {shape.name:>7} {c:<4} {r.rps:>8.0f} req/s  p50 {r.p50_us:>6.0f} µs  "
                      f"p99 {r.p99_us:>6.0f} µs  {r.cpu_us_per_call:>6.1f} CPU µs/call"
                      + (f"  spans {r.spans_received}/{r.spans_expected}" if r.spans_expected else "")
                      + "".join(f"\n    problem: {x}" for x in r.problems), flush=True)
    print()
    print(report(shapes, results, pinning, contenders))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    problems = [x for r in results for x in r.problems]
    print(f"\n{len(results)} runs, {len(problems)} with problems; work dir {workdir}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
