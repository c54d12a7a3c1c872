#!/usr/bin/env python3
"""Scenario 5, "sustained load": --duration seconds (default 60) at the highest rate this
machine sustains; every span is either received by the collector or counted as dropped by the
service itself.

1. the harness's OTLP receiver alone, counting only (otlp_receiver.py: it sums the spans of
   each request without building records, and keeps up at benchmark load); the service
   exports to it directly, without rotel: a second hop would only add a queue of its own that
   can lose spans and a process taking CPU from the service under test, and this scenario
   asserts on the service's own accounting. The server with the SDK's default batch settings
   (queue 2048, batch 512, delay 5 s) and its default DB_LATENCY_MS (10); the client's load
   mode with its own telemetry off and RUST_LOG=warn (it is the load generator: its spans
   would mix in, and its INFO line per call costs CPU the server needs);
2. unless --concurrency is given, a short probe (--probe-seconds at each of --probe-levels,
   stopping once a level gains less than 10 % or the service reports its first dropped span)
   picks the smallest concurrency within 5 % of the best throughput among the levels at which
   no span was dropped: the highest rate the service sustains *with* its telemetry. The probe
   has a server process of its own, whose spans are accounted as in 4;
3. the run itself, on a fresh server (so its drop count is its own): --duration seconds at that
   concurrency; CPU seconds of the server and of the harness (the receiver runs in it) and the
   server's peak RSS from /proc;
4. SIGTERM the server (it flushes; the SDK then logs the total of spans it dropped, if any),
   wait (bounded) until the receiver has every span not reported dropped, and check:
   - every call succeeded;
   - spans received + spans dropped (as the service reported them) == 3 x calls served
     (a call makes a server span, a process-business-logic and a database-query span): either
     0 dropped, or the loss is surfaced by the service's own warning; never silent loss,
     never duplicates;
   - the server exits 0; every stdout line is JSON; no panic.
   Throughput, latency percentiles, drop counts are the figures.

    $PY ci/e2e/scenario_sustained.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_sustained.py --duration 15 --concurrency 32
    $PY ci/e2e/scenario_sustained.py --duration 10 --server-env OTEL_TRACES_EXPORTER=none       # must FAIL
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import Run  # noqa: E402

TITLE = "scenario sustained"
SPANS_PER_CALL = 3
DROPPING = b"dropped a Span due to queue full"  # BatchSpanProcessor.SpanDroppingStarted, once per process


def file_has(path, needle: bytes, offset: int) -> tuple[bool, int]:
    """Whether ``needle`` occurs in ``path`` after ``offset``; and the offset to search from next."""
    with open(path, "rb") as fh:
        fh.seek(max(0, offset - len(needle)))
        data = fh.read()
    return needle in data, max(0, offset - len(needle)) + len(data)


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--duration", "-d", type=float, default=60.0, help="seconds of sustained load (default 60)")
    p.add_argument("--concurrency", "-c", type=int, help="calls in flight; default: probe")
    p.add_argument("--probe-levels", default="16,64,256,1024",
                   help="concurrencies the probe tries in turn, stopping when one gains < 10%% (default 16,64,256,1024)")
    p.add_argument("--probe-seconds", type=float, default=3.0)
    p.add_argument("--telemetry-timeout", type=float, default=60.0)
    p.add_argument("--keep-stdout", action="store_true",
                   help="keep the server's stdout after a passing run (~9 MB per second of load)")
    a = p.parse_args(argv)
    if a.duration <= 0:
        p.error("--duration must be > 0")
    return common.finish_args(p, a, "sustained")


def account(run: Run, rx, server, served: int, baseline: int, name: str) -> dict:
    """Stop ``server`` (it flushes), then wait (bounded) until the receiver's span count minus
    ``baseline`` plus what the server reported dropped reaches 3 x ``served``; check and return
    the figures of that phase."""
    a, c = run.args, run.checks
    before_stop = rx.counts.spans - baseline
    rc = server.stop(timeout=40)
    records = common.server_stdout_checks(c, server)
    dropped = common.dropped_counts(records)
    expected = SPANS_PER_CALL * served
    dropped_spans = dropped.get("spans", 0)
    # the flush at exit has returned; its last requests may still be in the receiver's threads
    try:
        common.poll_until(lambda: rx.counts.spans - baseline + dropped_spans >= expected,
                          timeout=a.telemetry_timeout, what=f"{expected} {name} spans received or dropped", interval=0.25)
    except TimeoutError as e:
        print(f"  ({e})")
    received = rx.counts.spans - baseline
    c.check(received + dropped_spans == expected,
            f"{name}: spans received + dropped (the service's own count) == 3 x calls served",
            f"received {received} + dropped {dropped_spans} != {expected} (3 x {served}); "
            f"{expected - received - dropped_spans:+d} unaccounted")
    if dropped_spans:
        c.check(dropped.get("spans_dropping_started") == 1, f"{name}: the first drop was also reported when it happened")
    c.check(rc == 0 and not server.killed, f"{name}: server exited 0 on SIGTERM", f"exit {rc}")
    out = {"served": served, "spans_expected": expected, "spans_received": received,
           "spans_received_before_exit": before_stop, "spans_dropped_reported": dropped_spans,
           "logs_dropped_reported": dropped.get("logs", 0), "server_exit_code": rc,
           "server_stop_s": round(server.stop_duration_s() or 0, 2), "sdk_lines": len(common.sdk_problems(records)),
           "server_stdout_mb": round(server.stdout_path.stat().st_size / 1e6, 1)}
    if c.ok and not a.keep_stdout:
        server.stdout_path.write_text("(removed after a passing run; --keep-stdout keeps it)\n")
    return out


def probe(run: Run, rx, server_env: dict, problems: list[str]) -> tuple[int, dict]:
    """Find the concurrency to run at, on a server of its own (so the run's drop count is the
    run's); returns (concurrency, figures)."""
    a = run.args
    server, sport = run.start_server(server_env, name="server-probe")
    url = f"http://127.0.0.1:{sport}"
    rps: dict[int, float] = {}
    dropping_at = None
    offset = served = 0
    for level in (int(x) for x in a.probe_levels.split(",")):
        s = run.load(url, f"client-probe-{level}", level, duration=f"{a.probe_seconds}s",
                     id_prefix=f"probe{level}-").result(timeout=a.probe_seconds + 60)
        problems += [f"probe {level}: {p}" for p in common.load_problems(s)]
        served += s.ok
        found, offset = file_has(server.stdout_path, DROPPING, offset)
        print(f"  probe: concurrency {level}: {s.throughput_rps:.0f} calls/s, p99 {s.latency_ms.get('p99')} ms"
              + (", spans dropped" if found else ""))
        gain = s.throughput_rps / max(rps.values()) if rps else None
        rps[level] = round(s.throughput_rps, 1)
        if found:
            dropping_at = level  # the span queue overflowed: the telemetry no longer keeps up
            break
        if gain is not None and gain < 1.10:
            break  # saturated: more calls in flight only add latency
    # the best level at which the span queue kept up (the first level if none did)
    usable = {k: v for k, v in rps.items() if k != dropping_at} or rps
    best = max(usable.values())
    concurrency = min(level for level, v in usable.items() if v >= 0.95 * best)
    figures = {"rps": rps, "spans_dropped_at": dropping_at, **account(run, rx, server, served, 0, "probe")}
    return concurrency, figures


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rx = run.receiver(count_only=True).start()
    server_env = {**rx.otel_env(a.protocol), "OTEL_SERVICE_NAME": "e2e-sustained-server"}
    f.update(protocol=a.protocol, duration_s=a.duration)
    print(f"{TITLE}: {a.duration:g}s, OTLP {a.protocol} straight to the receiver, workdir {run.workdir}")
    problems: list[str] = []

    c.section("probe")
    concurrency = a.concurrency
    if concurrency is None:
        concurrency, f["probe"] = probe(run, rx, server_env, problems)
    f["concurrency"] = concurrency
    baseline = rx.counts.spans

    c.section("run")
    server, sport = run.start_server(server_env)
    cpu0 = {"server": common.cpu_seconds(server.pid), "harness": common.cpu_seconds(os.getpid())}
    s = run.load(f"http://127.0.0.1:{sport}", "client-load", concurrency, duration=f"{a.duration}s",
                 id_prefix="sustained-").result(timeout=a.duration + 120)
    cpu1 = {"server": common.cpu_seconds(server.pid), "harness": common.cpu_seconds(os.getpid())}
    f["cpu_s"] = {k: round(cpu1[k] - cpu0[k], 1) for k in cpu0 if cpu0[k] is not None and cpu1[k] is not None}
    f["server_peak_rss_kb"] = server.peak_rss_kb()
    problems += [f"run: {p}" for p in common.load_problems(s)]
    f.update(requests=s.requests, ok=s.ok, errors=s.errors, throughput_rps=round(s.throughput_rps, 1),
             latency_ms=s.latency_ms, elapsed_s=round(s.elapsed_s, 2))
    print(f"  run: {s.requests} calls at concurrency {concurrency}: {s.throughput_rps:.0f}/s, latency {s.latency_ms}")
    f.update(account(run, rx, server, s.ok, baseline, "run"))
    f["drop_ratio"] = round(f["spans_dropped_reported"] / f["spans_expected"], 4) if f["spans_expected"] else None
    c.check(f["spans_received"] > 0, "run: the collector received spans")

    c.section("client")
    c.empty(problems, "every call succeeded")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "sustained"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
