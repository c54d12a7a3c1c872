#!/usr/bin/env python3
"""Scenario 4, "SIGTERM under load": calls in flight when the server is told to stop all
complete, the server exits within its drain deadline, and their telemetry is flushed.

1. rotel (forwarding to the harness's OTLP receiver) and the server with
   DB_LATENCY_MS=--db-latency-ms (1500) and DRAIN_TIMEOUT_SECS=--drain-timeout (10); the span batch delay stays at its default (5 s), so
   the spans can only reach rotel through the flush at shutdown;
2. the client's load mode with --requests C --concurrency C (ids drain-<i>), its own telemetry
   exporting to rotel too;
3. once the server has logged "Processing request" for all C calls, SIGTERM it;
4. once it logged "Shutdown requested", a new connection must not get a call served;
5. check: the load run reports C ok, 0 failures; the server exits 0, its drain phase (SIGTERM
   to "Server stopped") lasts less than the drain deadline, without the "Drain timeout" warning,
   and the whole exit (drain + telemetry flush, 10 s budget) stays under deadline + 10 s; every
   completed call's server span (and inner spans) reached rotel with rpc.status_code OK; client
   spans too; every stdout line JSON; no panic.

    $PY ci/e2e/scenario_sigterm.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_sigterm.py --calls 100 --db-latency-ms 3000
    $PY ci/e2e/scenario_sigterm.py --drain-timeout 1         # deadline shorter than the calls: must FAIL
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import h2  # noqa: E402
from common import CLIENT_SPAN, DB_SPAN, LOGIC_SPAN, SERVER_SPAN, Run  # noqa: E402
from rotel import Telemetry  # noqa: E402

TITLE = "scenario sigterm"
SERVICE, CLIENT_SERVICE = "e2e-drain-server", "e2e-drain-client"
FLUSH_BUDGET_S = 10.0  # telemetry crate: SHUTDOWN_BUDGET


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--calls", "-C", type=int, default=32, help="calls in flight at SIGTERM (default 32)")
    p.add_argument("--db-latency-ms", type=int, default=1500)
    p.add_argument("--drain-timeout", type=int, default=10, help="DRAIN_TIMEOUT_SECS (default 10)")
    p.add_argument("--telemetry-timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "sigterm")


def late_call(port: int) -> str:
    """What a new connection gets once shutdown started: 'refused', 'no answer', or the gRPC
    status of a ProcessRequest call ('served' if 0)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return f"connect error {e}"
    try:
        r = h2.call(f"http://127.0.0.1:{port}", h2.PROCESS_PATH, h2.grpc_frame(h2.my_request(b"late")), timeout=3)
    except subprocess.TimeoutExpired:
        return "no answer"
    if r.grpc_status == 0:
        return "served"
    return f"grpc-status {r.grpc_status}" if r.grpc_status is not None else f"no status ({r.error or 'reset'})"


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rotel = run.rotel()
    rotel.start()
    server, sport = run.start_server({
        **rotel.otel_env(a.protocol),
        "OTEL_SERVICE_NAME": SERVICE,
        "DB_LATENCY_MS": str(a.db_latency_ms),
        "DRAIN_TIMEOUT_SECS": str(a.drain_timeout),
    })
    url = f"http://127.0.0.1:{sport}"
    f.update(calls=a.calls, db_latency_ms=a.db_latency_ms, drain_timeout_s=a.drain_timeout, protocol=a.protocol)
    print(f"{TITLE}: {a.calls} calls of {a.db_latency_ms} ms, drain deadline {a.drain_timeout}s, workdir {run.workdir}")

    client_env = {**rotel.otel_env(a.protocol), "OTEL_SDK_DISABLED": "false", "OTEL_SERVICE_NAME": CLIENT_SERVICE,
                  "OTEL_BSP_SCHEDULE_DELAY": "200"}
    load = run.load(url, "client-load", a.calls, requests=a.calls, id_prefix="drain-", env=client_env)
    common.poll_until(lambda: len(common.processed_ids(common.read_records(server.stdout_path), "drain-")) >= a.calls,
                      timeout=30, what=f"{a.calls} calls in flight", alive=[server, load.proc])
    in_flight_at_signal = load.proc.running()
    sigterm_wall = time.time()
    server.proc.send_signal(15)
    server.signal_sent_at = time.monotonic()
    # a call on a new connection once the server said it stops accepting
    try:
        common.poll_until(lambda: any("Shutdown requested" in str(r.get("msg")) for r in common.read_records(server.stdout_path)),
                          timeout=5, what="'Shutdown requested'")
        late = late_call(sport)
    except TimeoutError:
        late = "no 'Shutdown requested' line"
    f["late_call"] = late
    try:
        rc = server.wait(timeout=a.drain_timeout + FLUSH_BUDGET_S + 10)
    except Exception:  # noqa: BLE001 - still running: kill, and fail below
        rc = server.stop(timeout=1)
    f.update(server_exit_code=rc, server_exit_after_sigterm_s=round(server.ended_at - server.signal_sent_at, 2))
    summary = load.result(timeout=a.drain_timeout + 30)
    f.update(client_ok=summary.ok, client_errors=summary.errors, client_latency_ms=summary.latency_ms)

    def complete(t: Telemetry) -> bool:
        return (len(t.find_spans(SERVER_SPAN, "SERVER", SERVICE)) >= summary.ok
                and len(t.find_spans(CLIENT_SPAN, None, CLIENT_SERVICE)) >= summary.requests)

    try:
        t = rotel.wait_for(complete, timeout=a.telemetry_timeout, what="server and client spans")
    except TimeoutError as e:
        print(f"  (telemetry incomplete: {e}; checking what arrived)")
        t = rotel.telemetry()

    c.section("client")
    c.check(in_flight_at_signal, "the load run was still waiting for its calls at SIGTERM")
    c.empty(common.load_problems(summary, a.calls), f"all {a.calls} calls in flight at SIGTERM succeeded")

    c.section("server")
    records = common.server_stdout_checks(c, server)
    stopped = [common.bunyan_time(r) for r in records if r.get("msg") == "Server stopped"]
    drain_s = (stopped[0] - sigterm_wall) if stopped and stopped[0] else None
    f["drain_s"] = round(drain_s, 2) if drain_s is not None else None
    c.check(rc == 0, "server exited 0 after SIGTERM", f"exit {rc}")
    c.check(drain_s is not None and drain_s < a.drain_timeout,
            f"drain (SIGTERM -> 'Server stopped') shorter than the {a.drain_timeout}s deadline", f"{drain_s}")
    c.empty([r.get("msg") for r in records if "Drain timeout" in str(r.get("msg"))], "no 'Drain timeout' warning")
    c.check(f["server_exit_after_sigterm_s"] <= a.drain_timeout + FLUSH_BUDGET_S,
            f"exit within drain deadline + {FLUSH_BUDGET_S:.0f}s flush budget", f"{f['server_exit_after_sigterm_s']}s")
    c.check(late != "served", "a call on a new connection after 'Shutdown requested' is not served", late)

    c.section("telemetry flushed at exit")
    spans = [s for s in t.find_spans(SERVER_SPAN, "SERVER", SERVICE)
             if str(s.attributes.get("request.id", "")).startswith("drain-")]
    ids = {s.attributes["request.id"] for s in spans}
    f["server_spans"] = len(spans)
    c.equal(len(ids), summary.ok, "distinct server spans of the completed calls")
    c.empty([f"{s.attributes.get('request.id')}: {s.attributes.get('rpc.status_code')}" for s in spans
             if s.attributes.get("rpc.status_code") != "OK"], "their rpc.status_code is OK")
    sids = {s.span_id for s in spans}
    logic = [s for s in t.find_spans(LOGIC_SPAN, service=SERVICE) if s.parent_span_id in sids]
    db = [s for s in t.find_spans(DB_SPAN, service=SERVICE) if s.parent_span_id in {x.span_id for x in logic}]
    c.equal(len(logic) + len(db), 2 * summary.ok, "inner spans of the completed calls")
    client_spans = t.find_spans(CLIENT_SPAN, None, CLIENT_SERVICE)
    c.equal(len(client_spans), summary.requests, "client spans")
    c.empty(sorted({s.trace_id for s in spans} - {s.trace_id for s in client_spans}),
            "every server span continues a client trace")
    c.empty(t.unparsed, "every OTLP request rotel forwarded decoded")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "sigterm"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
