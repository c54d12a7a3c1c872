#!/usr/bin/env python3
"""Scenario 3, "collector killed and restarted mid-run": no call fails, and what the server
produces after the collector is back reaches it.

1. rotel (forwarding to the harness's OTLP receiver) and the server (short export intervals);
2. "pre" run: --pre requests with ids pre-<i>; wait until rotel has all their server spans;
3. "mid" run: load for --window seconds (ids mid-<i>) in the background; once the server has
   logged --kill-after of its calls, SIGKILL rotel; wait until the server reports the failed
   export (a WARN/ERROR line from an opentelemetry* target) and at least --down-seconds (the
   outage being simulated); restart rotel on the same ports;
4. when the mid run ends, "post" run: --post requests with ids post-<i>;
5. SIGTERM the server, then check:
   - every call of the three runs succeeded;
   - all server spans of the post run (and their inner spans and log records) reached the
     restarted rotel; so did every mid call the server started >= --grace s after the restart;
   - the cumulative myservice.requests.total received after the restart equals all calls served
     (pre + mid + post): the counter survives the outage;
   - no span received twice; every stdout line JSON; export problems rate-limited (no callsite
     twice within 60 s); the server said that export recovered, for each signal; server exits 0.
   Reported, not checked: how many mid spans were lost while rotel was down
   (mid_spans_lost), and how long after the restart the first span arrived.

    $PY ci/e2e/scenario_collector_restart.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_collector_restart.py --protocol http/protobuf --window 20
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from common import DB_SPAN, LOGIC_SPAN, SERVER_SPAN, Run  # noqa: E402
from rotel import Telemetry  # noqa: E402

TITLE = "scenario collector-restart"
SERVICE = "e2e-restart-server"


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--pre", type=int, default=200, help="calls before the kill (default 200)")
    p.add_argument("--post", type=int, default=300, help="calls after the restart (default 300)")
    p.add_argument("--window", type=float, default=12.0, help="seconds of the mid run (default 12)")
    p.add_argument("--concurrency", "-c", type=int, default=2,
                   help="calls in flight in the mid run (default 2: ~100 calls/s keeps the decoded records few)")
    p.add_argument("--db-latency-ms", type=int, default=20)
    p.add_argument("--kill-after", type=int, default=100, help="mid calls the server has started when rotel is killed")
    p.add_argument("--down-seconds", type=float, default=3.0, help="minimum outage (default 3 s)")
    p.add_argument("--grace", type=float, default=1.0,
                   help="mid calls started this long after the restart must all arrive (default 1 s)")
    p.add_argument("--restart-elsewhere", action="store_true",
                   help="self-check: restart rotel on other ports, so the post telemetry is lost and the run must FAIL")
    p.add_argument("--telemetry-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "collector-restart")


def with_prefix(spans, prefix: str):
    return [s for s in spans if str(s.attributes.get("request.id", "")).startswith(prefix)]


def server_spans(t: Telemetry, prefix: str):
    return with_prefix(t.find_spans(SERVER_SPAN, "SERVER", SERVICE), prefix)


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rotel = run.rotel()
    rotel.start()
    common_env = {
        **rotel.otel_env(a.protocol),
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "DB_LATENCY_MS": str(a.db_latency_ms),
    }
    server, sport = run.start_server(common_env)
    url = f"http://127.0.0.1:{sport}"
    f.update(protocol=a.protocol, rotel_ports=[rotel.grpc_port, rotel.http_port])
    print(f"{TITLE}: OTLP {a.protocol} -> {rotel.grpc_port}/{rotel.http_port}, server {sport}, workdir {run.workdir}")
    problems: list[str] = []

    # -- pre -----------------------------------------------------------------------------------
    s = run.load(url, "client-pre", 8, requests=a.pre, id_prefix="pre-").result(timeout=120)
    problems += [f"pre: {p}" for p in common.load_problems(s, a.pre)]
    try:
        rotel.wait_for(lambda t: len(server_spans(t, "pre-")) >= a.pre, timeout=a.telemetry_timeout,
                       what=f"{a.pre} pre server spans")
    except TimeoutError as e:
        raise common.CouldNotRun(f"the pipeline does not work before the kill: {e}") from None

    # -- mid: kill and restart ------------------------------------------------------------------
    mid = run.load(url, "client-mid", a.concurrency, duration=f"{a.window}s", id_prefix="mid-")
    common.poll_until(lambda: len(common.processed_ids(common.read_records(server.stdout_path), "mid-")) >= a.kill_after,
                      timeout=30, what=f"{a.kill_after} mid calls started", alive=[server, mid.proc])
    sdk_before = len(common.sdk_problems(common.read_records(server.stdout_path)))
    rotel.kill()
    killed_wall, killed_at = time.time(), time.monotonic()
    print(f"  rotel killed after {len(common.processed_ids(common.read_records(server.stdout_path), 'mid-'))} mid calls")
    try:
        common.poll_until(lambda: len(common.sdk_problems(common.read_records(server.stdout_path))) > sdk_before,
                          timeout=20, what="the server reporting the failed export", alive=[server])
        f["export_failure_reported_after_s"] = round(time.monotonic() - killed_at, 2)
    except TimeoutError:
        f["export_failure_reported_after_s"] = None
    remaining = a.down_seconds - (time.monotonic() - killed_at)
    if remaining > 0:
        time.sleep(remaining)  # the outage itself: its length is what is being simulated
    if a.restart_elsewhere:
        from rotel import free_port

        rotel.grpc_port, rotel.http_port = free_port(), free_port()
    before_restart = len(rotel.telemetry().spans)
    rotel.start()
    restarted_wall, restarted_at = time.time(), time.monotonic()
    f["outage_s"] = round(restarted_at - killed_at, 2)
    try:
        rotel.wait_for(lambda t: len(t.spans) > before_restart, timeout=a.window + 10, what="a span after the restart")
        f["first_span_received_after_restart_s"] = round(time.monotonic() - restarted_at, 2)
    except TimeoutError:
        f["first_span_received_after_restart_s"] = None
    ms = mid.result(timeout=a.window + 60)
    problems += [f"mid: {p}" for p in common.load_problems(ms)]
    f["mid"] = {"requests": ms.requests, "ok": ms.ok, "throughput_rps": round(ms.throughput_rps, 1),
                "latency_ms": ms.latency_ms}

    # -- post ----------------------------------------------------------------------------------
    ps = run.load(url, "client-post", 8, requests=a.post, id_prefix="post-").result(timeout=120)
    problems += [f"post: {p}" for p in common.load_problems(ps, a.post)]
    served = s.ok + ms.ok + ps.ok
    f["served"] = served

    def complete(t: Telemetry) -> bool:
        post = server_spans(t, "post-")
        return (len(post) >= a.post
                and t.metric_total("myservice.requests.total", SERVICE) >= served)

    try:
        t = rotel.wait_for(complete, timeout=a.telemetry_timeout, what="post spans and the final counter")
    except TimeoutError as e:
        print(f"  (telemetry incomplete: {e}; checking what arrived)")
        t = rotel.telemetry()
    rc = server.stop(timeout=30)
    f.update(server_exit_code=rc, server_stop_s=round(server.stop_duration_s() or 0, 2))
    t = rotel.telemetry()

    # -- checks --------------------------------------------------------------------------------
    c.section("client")
    c.empty(problems, "every call of the pre, mid and post runs succeeded")

    c.section("telemetry after the restart")
    records = common.server_stdout_checks(c, server)
    post = server_spans(t, "post-")
    post_ids = {s.attributes["request.id"] for s in post}
    c.equal(len(post_ids), a.post, "distinct post server spans received")
    post_span_ids = {s.span_id for s in post}
    logic = [s for s in t.find_spans(LOGIC_SPAN, service=SERVICE) if s.parent_span_id in post_span_ids]
    logic_ids = {s.span_id for s in logic}
    db = [s for s in t.find_spans(DB_SPAN, service=SERVICE) if s.parent_span_id in logic_ids]
    c.equal(len(logic), a.post, f"{LOGIC_SPAN} spans under post server spans")
    c.equal(len(db), a.post, f"{DB_SPAN} spans under them")
    post_traces = {s.trace_id for s in post}
    log_traces = {r.trace_id for r in t.find_logs(SERVICE) if r.trace_id in post_traces}
    c.equal(len(log_traces), a.post, "post traces with server log records")

    # mid calls the server started well after the restart (bunyan time of "Processing request")
    late = {}
    for r in records:
        ids = common.processed_ids([r], "mid-")
        tm = common.bunyan_time(r)
        if ids and tm is not None and tm >= restarted_wall + a.grace:
            late[ids[0]] = tm
    mid_received = {s.attributes["request.id"] for s in server_spans(t, "mid-")}
    missing_late = sorted(set(late) - mid_received)
    f.update(mid_started_after_restart=len(late), mid_spans_received=len(mid_received),
             mid_spans_lost=ms.ok - len(mid_received))
    c.check(len(late) > 0, f"some mid calls started >= {a.grace}s after the restart", "none: lengthen --window")
    c.empty(missing_late, f"every mid call started >= {a.grace}s after the restart has its server span")

    total = t.metric_total("myservice.requests.total", SERVICE)
    f["requests_total_metric"] = total
    c.equal(total, served, "cumulative myservice.requests.total after the restart (pre + mid + post)")
    span_ids: dict[str, int] = {}
    for sp in t.spans:
        span_ids[sp.span_id] = span_ids.get(sp.span_id, 0) + 1
    c.empty([k for k, v in span_ids.items() if v > 1], "no span received twice")
    c.empty(t.unparsed, "every OTLP request rotel forwarded decoded")

    c.section("server")
    sdk = common.sdk_problems(records)
    f["sdk_lines"] = len(sdk)
    f["sdk_lines_by_callsite"] = {k: sum(1 for r in sdk if common.callsite(r) == k) for k in {common.callsite(r) for r in sdk}}
    f["dropped"] = common.dropped_counts(records)
    c.check(f["export_failure_reported_after_s"] is not None, "the server reported the failed export while rotel was down")
    # After the kill, not after `restarted_wall`: the exporters reconnect the moment rotel
    # listens, which can be a few ms before rotel.start() returns and the restart is timed.
    recovered = {}
    for r in records:
        msg = str(r.get("msg", ""))
        tm = common.bunyan_time(r)
        if msg.startswith("telemetry export recovered: ") and tm is not None and tm >= killed_wall:
            recovered[msg.removeprefix("telemetry export recovered: ").split(" are exported again")[0]] = msg
    f["export_recovered"] = sorted(recovered)
    c.equal(sorted(recovered), ["log records", "metrics", "spans"],
            "after the restart the server said that export recovered, for each signal")
    c.empty(common.repeats_within(sdk, 60.0), "no SDK/transport callsite wrote twice within 60 s")
    c.check(rc == 0 and not server.killed, "server exited 0 on SIGTERM", f"exit {rc}, killed={server.killed}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "collector-restart"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
