#!/usr/bin/env python3
"""Scenario 5, "sustained load": --duration seconds (default 60) at the highest rate this
machine sustains; every span is either received by the collector or counted as dropped by the
service itself.

1. rotel at *basic* verbosity for traces (one "Received traces. ... spans=N" line per batch:
   cheap at any rate, unlike detailed); the server with the SDK's default batch settings
   (queue 2048, batch 512, delay 5 s) and its default DB_LATENCY_MS (10); the client's load
   mode with its own telemetry off (it is the load generator, and its spans would mix in);
2. unless --concurrency is given, a short probe (--probe-seconds at each of --probe-levels,
   stopping once a level gains less than 10 %) picks the smallest concurrency within 5 % of
   the best throughput;
3. the run itself: --duration seconds at that concurrency; CPU seconds of server, client and
   rotel and the server's peak RSS are read from /proc;
4. SIGTERM the server (it flushes; the SDK then logs the total of spans it dropped, if any),
   wait (bounded) until rotel's span count stops short of nothing, and check:
   - every call succeeded;
   - spans received + spans dropped (as the service reported them) == 3 x calls served
     (a call makes a server span, a process-business-logic and a database-query span): either
     0 dropped, or the loss is surfaced by the service's own warning; never silent loss,
     never duplicates;
   - the server exits 0; every stdout line is JSON; no panic.
   Throughput, latency percentiles, drop counts are the figures.

    python3 ci/e2e/scenario_sustained.py --bin-dir /tmp/cg-target/release
    python3 ci/e2e/scenario_sustained.py --duration 15 --concurrency 32
    python3 ci/e2e/scenario_sustained.py --duration 10 --server-env OTEL_TRACES_EXPORTER=none   # must FAIL
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import Run  # noqa: E402

TITLE = "scenario sustained"
SPANS_PER_CALL = 3


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


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rotel = run.rotel(verbosity="basic", debug_log=("traces",))
    rotel.start()
    server, sport = run.start_server({**rotel.otel_env(a.protocol), "OTEL_SERVICE_NAME": "e2e-sustained-server"})
    url = f"http://127.0.0.1:{sport}"
    f.update(protocol=a.protocol, duration_s=a.duration)
    print(f"{TITLE}: {a.duration:g}s, OTLP {a.protocol}, rotel basic, workdir {run.workdir}")
    served = 0
    problems: list[str] = []

    concurrency = a.concurrency
    if concurrency is None:
        probe: dict[int, float] = {}
        for level in (int(x) for x in a.probe_levels.split(",")):
            s = run.load(url, f"client-probe-{level}", level, duration=f"{a.probe_seconds}s",
                         id_prefix=f"probe{level}-").result(timeout=a.probe_seconds + 60)
            problems += [f"probe {level}: {p}" for p in common.load_problems(s)]
            served += s.ok
            print(f"  probe: concurrency {level}: {s.throughput_rps:.0f} calls/s, p99 {s.latency_ms.get('p99')} ms")
            gain = s.throughput_rps / max(probe.values()) if probe else None
            probe[level] = round(s.throughput_rps, 1)
            if gain is not None and gain < 1.10:
                break  # saturated: more calls in flight only add latency
        best = max(probe.values())
        concurrency = min(level for level, rps in probe.items() if rps >= 0.95 * best)
        f["probe_rps"] = probe
    f["concurrency"] = concurrency

    cpu0 = {"server": common.cpu_seconds(server.pid), "rotel": common.cpu_seconds(rotel.pid)}
    load = run.load(url, "client-load", concurrency, duration=f"{a.duration}s", id_prefix="sustained-")
    s = load.result(timeout=a.duration + 120)
    cpu1 = {"server": common.cpu_seconds(server.pid), "rotel": common.cpu_seconds(rotel.pid)}
    f["cpu_s"] = {k: round(cpu1[k] - cpu0[k], 1) for k in cpu0 if cpu0[k] is not None and cpu1[k] is not None}
    f["server_peak_rss_kb"] = server.peak_rss_kb()
    problems += [f"run: {p}" for p in common.load_problems(s)]
    served += s.ok
    f.update(requests=s.requests, ok=s.ok, errors=s.errors, throughput_rps=round(s.throughput_rps, 1),
             latency_ms=s.latency_ms, elapsed_s=round(s.elapsed_s, 2))
    print(f"  run: {s.requests} calls at concurrency {concurrency}: {s.throughput_rps:.0f}/s, latency {s.latency_ms}")

    spans_before_stop = rotel.basic_counts().spans
    rc = server.stop(timeout=40)
    f.update(server_exit_code=rc, server_stop_s=round(server.stop_duration_s() or 0, 2))
    records = common.server_stdout_checks(c, server)
    dropped = common.dropped_counts(records)
    expected = SPANS_PER_CALL * served
    dropped_spans = dropped.get("spans", 0)
    # the flush at exit has returned, but rotel prints on its own schedule (200 ms batches)
    try:
        common.poll_until(lambda: rotel.basic_counts().spans + dropped_spans >= expected,
                          timeout=a.telemetry_timeout, what=f"{expected} spans received or dropped", interval=0.25)
    except TimeoutError as e:
        print(f"  ({e})")
    counts = rotel.basic_counts()
    received = counts.spans
    f.update(served=served, spans_expected=expected, spans_received=received, spans_received_before_exit=spans_before_stop,
             spans_dropped_reported=dropped_spans, dropped=dropped, rotel_trace_batches=counts.batches.get("traces", 0),
             drop_ratio=round(dropped_spans / expected, 4) if expected else None)

    c.section("client")
    c.empty(problems, "every call succeeded")
    c.section("spans: received + reported dropped == produced")
    c.check(received + dropped_spans == expected, "spans received + dropped (service's own count) == 3 x calls served",
            f"received {received} + dropped {dropped_spans} != {expected} (3 x {served}); "
            f"{expected - received - dropped_spans:+d} unaccounted")
    if dropped_spans:
        c.check(dropped.get("spans_dropping_started") == 1, "the first drop was also reported while it happened")
    c.check(received > 0, "the collector received spans")
    c.section("server")
    c.check(rc == 0 and not server.killed, "server exited 0 on SIGTERM", f"exit {rc}")
    f["sdk_lines"] = len(common.sdk_problems(records))
    f["server_stdout_mb"] = round(server.stdout_path.stat().st_size / 1e6, 1)
    if c.ok and not a.keep_stdout:
        server.stdout_path.write_text("(removed after a passing run; --keep-stdout keeps it)\n")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "sustained"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
