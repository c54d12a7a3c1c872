#!/usr/bin/env python3
"""Scenario 2, "collector down from the start": the server exports to a port where nothing
listens; the service must not notice beyond a few rate-limited lines.

1. pick a free port and keep it closed: the server's OTLP endpoint (short export intervals, so
   every signal fails to export many times during the run);
2. send N requests (client load mode, its own telemetry off) in PHASES equal parts, reading the
   server's RSS and its SDK/transport warning lines after each part;
3. one single client call with the client also pointed at the dead collector (it must answer
   and exit promptly: its telemetry shutdown is bounded);
4. SIGTERM the server and check:
   - every call succeeded, and the server logged "Processing request" for each;
   - RSS growth from the end of the first part to the end of the run stays under
     --rss-growth-mib (default 8 MiB). Why that bound: the exporters' buffers are bounded (span
     and log queues of 2048 records each, one batch of 512 in retry, one metric set) and are
     full within the first part (the SDK reports dropping, see "dropped"), so after it only
     allocator noise remains: glibc gives a thread that meets a locked arena a new one, which
     shows as steps of 1-4 MiB at any time (measured: 0.8-4.2 MiB over 4,000 calls, 2.9 MiB over
     21,000). Keeping even 1 KB per call (less than one span with its attributes; a call makes 3
     spans and 3 log records) adds 11.7 MiB over the 12,000 calls after the first part at the
     default N=14000, so a leak of that size fails however the noise falls;
   - WARN/ERROR lines from opentelemetry*/transport targets do not grow with N: no callsite
     writes twice within 60 s, and the count at the end of the run is the count after the first
     part plus at most one line per callsite seen for the first time later;
   - the server exits 0 within its drain + flush budget; every stdout line is JSON; no panic.

    $PY ci/e2e/scenario_collector_down.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_collector_down.py --requests 9000 --protocol http/protobuf
"""

from __future__ import annotations

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import procs  # noqa: E402
from common import Run  # noqa: E402

TITLE = "scenario collector-down"


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--requests", "-n", type=int, default=14000, help="N requests in all (default 14000)")
    p.add_argument("--phases", type=int, default=7, help="parts N is sent in (default 7)")
    p.add_argument("--concurrency", "-c", type=int, default=32)
    p.add_argument("--rss-growth-mib", type=float, default=8.0,
                   help="allowed RSS growth from the end of the first part to the end (default 8)")
    p.add_argument("--max-sdk-lines", type=int, default=20,
                   help="at most this many SDK/transport WARN/ERROR lines in the whole run (default 20)")
    p.add_argument("--stop-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    if a.requests < a.phases or a.phases < 2:
        p.error("need --phases >= 2 and --requests >= --phases")
    return common.finish_args(p, a, "collector-down")


def dead_port() -> int:
    port = procs.free_port()
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise common.CouldNotRun(f"port {port} unexpectedly accepts connections")
    return port


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    port = dead_port()
    endpoint = f"http://127.0.0.1:{port}"
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": a.protocol,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
    }
    f.update(protocol=a.protocol, requests=a.requests, concurrency=a.concurrency, dead_endpoint=endpoint)
    server, sport = run.start_server({**otel, "OTEL_SERVICE_NAME": "e2e-down-server"})
    url = f"http://127.0.0.1:{sport}"
    print(f"{TITLE}: N={a.requests} in {a.phases} parts, OTLP {a.protocol} -> {endpoint} (closed), workdir {run.workdir}")
    f["rss_kb_idle"] = server.rss_kb()

    per = [a.requests // a.phases + (1 if i < a.requests % a.phases else 0) for i in range(a.phases)]
    phases = []
    client_problems = []
    t0 = time.monotonic()
    for i, n in enumerate(per, 1):
        s = run.load(url, f"client-load-{i}", a.concurrency, requests=n, id_prefix=f"down-p{i}-").result(timeout=300)
        client_problems += [f"part {i}: {p}" for p in common.load_problems(s, n)]
        records = common.read_records(server.stdout_path)
        phases.append({
            "requests": n, "ok": s.ok, "throughput_rps": round(s.throughput_rps, 1),
            "latency_ms": s.latency_ms, "rss_kb": server.rss_kb(),
            "sdk_lines": len(common.sdk_problems(records)), "t_s": round(time.monotonic() - t0, 2),
        })
        print(f"  part {i}: {n} calls, ok {s.ok}, {s.throughput_rps:.0f}/s, RSS {phases[-1]['rss_kb']} kB, "
              f"SDK lines so far {phases[-1]['sdk_lines']}")
    f["phases"] = phases
    f["peak_rss_kb"] = server.peak_rss_kb()
    records_before_stop = common.read_records(server.stdout_path)

    # the client pointed at the dead collector too: answers, exits 0, within its shutdown budget
    single = procs.run_client(run.client_bin, url, ["--id", "down-single"], timeout=60, workdir=run.workdir,
                              name="client-single",
                              env={**otel, "OTEL_SERVICE_NAME": "e2e-down-client", **a.client_env_extra})
    f["single_call_s"] = round(single.duration_s, 2)

    rc = server.stop(timeout=a.stop_timeout)
    f.update(server_exit_code=rc, server_stop_s=round(server.stop_duration_s() or 0, 2))

    c.section("client")
    c.empty(client_problems, f"{a.requests} calls with the collector down all succeeded")
    c.check(single.ok, "a single client call with the client's collector down succeeds",
            f"exit {single.returncode}: {single.error or single.stderr[-300:]!r}")
    c.check(single.duration_s < 15, "the single call (including the client's telemetry shutdown) takes < 15 s",
            f"{single.duration_s:.1f}s")

    c.section("server")
    records = common.server_stdout_checks(c, server)
    ids = common.processed_ids(records, "down-p")
    f["processing_lines"] = len(ids)
    c.equal(len(set(ids)), a.requests, "distinct 'Processing request' lines")
    c.check(rc == 0 and not server.killed, "server exited 0 on SIGTERM", f"exit {rc}, killed={server.killed}")

    c.section("memory")
    growth_kb = phases[-1]["rss_kb"] - phases[0]["rss_kb"]
    f["rss_growth_kb_after_part1"] = growth_kb
    f["rss_growth_kb_total"] = phases[-1]["rss_kb"] - f["rss_kb_idle"]
    c.check(growth_kb <= a.rss_growth_mib * 1024,
            f"RSS growth from part 1 to the end <= {a.rss_growth_mib} MiB",
            f"{growth_kb} kB ({[p['rss_kb'] for p in phases]})")

    c.section("export problems: logged, rate-limited")
    sdk_all = common.sdk_problems(records)
    sdk_run = common.sdk_problems(records_before_stop)
    by_site: dict[str, int] = {}
    for r in sdk_all:
        by_site[common.callsite(r)] = by_site.get(common.callsite(r), 0) + 1
    f["sdk_lines_total"] = len(sdk_all)
    f["sdk_lines_by_callsite"] = by_site
    f["dropped"] = common.dropped_counts(records)
    c.check(len(sdk_all) > 0, "the export failure was reported on stdout", "no WARN/ERROR from opentelemetry*")
    c.empty(common.repeats_within(sdk_all, 60.0), "no SDK/transport callsite wrote twice within 60 s")
    # lines after part 1 may only be first lines of new callsites
    part1_count = phases[0]["sdk_lines"]
    seen_by_part1 = {common.callsite(r) for r in sdk_run[:part1_count]}
    new_sites = {common.callsite(r) for r in sdk_run[part1_count:]} - seen_by_part1
    c.check(len(sdk_run) <= part1_count + len(new_sites),
            "SDK lines do not grow with N (end of run <= after part 1 + new callsites)",
            f"after part 1: {part1_count}, at the end: {len(sdk_run)}, new callsites: {len(new_sites)}")
    c.check(len(sdk_all) <= a.max_sdk_lines, f"at most {a.max_sdk_lines} SDK/transport lines for N={a.requests}",
            f"{len(sdk_all)}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "collector-down"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
