#!/usr/bin/env python3
"""Scenario 1, "the whole path": client -> server -> rotel, for one OTLP protocol.

1. start rotel, exporting over OTLP to the harness's receiver (otlp_receiver.py), which decodes
   every span, data point and log record rotel forwards;
2. start the server with short export intervals, pointed at rotel;
3. send N requests with the client (its load mode when the binary has one, else N single calls
   with distinct ids);
4. stop the server with SIGTERM (it drains and flushes its telemetry);
5. wait (bounded) until the receiver has what is expected, then check:
   - N client spans, N server spans, 2N inner spans (business logic + database query);
   - every server span's parent is an attempt of a client span of the same trace; every inner span's parent
     is the expected span; ids are well-formed and unique; no span has status ERROR;
   - resource service.name of each side is the OTEL_SERVICE_NAME it was given;
   - myservice.requests.total (cumulative: last value per series, summed) == N, and the other
     server/client metrics are present and count N calls;
   - log records in spans carry trace and span ids that exist among the spans, and every
     request's trace has server and client log records;
   - every line of the server's stdout is JSON (bunyan), and its trace ids are exactly the
     server spans' trace ids;
   - every request rotel forwarded decoded; rotel logged no error or warning (receiving or
     exporting).

Exit status: 0 all checks passed, 1 a check failed (each failure is listed), 2 the scenario
could not run (a process did not start, a timeout in setup...).

    $PY ci/e2e/scenario_whole.py --protocol grpc
    $PY ci/e2e/scenario_whole.py --protocol http/protobuf --requests 200 --concurrency 8
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from checks import Checks, dump_json  # noqa: E402
from common import ATTEMPT_SPAN, CLIENT_SPAN, DB_SPAN, LOGIC_SPAN, SERVER_SPAN  # noqa: E402
from rotel import Rotel, RotelError, Telemetry  # noqa: E402

SERVER_METRICS = (
    "myservice.requests.total",
    "myservice.request.duration",
    "myservice.requests.active",
    "rpc.server.call.duration",
)
CLIENT_METRICS = ("myservice.client.calls.total", "myservice.client.call.duration", "rpc.client.call.duration")
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def parse_args(argv: list[str]) -> argparse.Namespace:
    default_bin = os.environ.get("E2E_BIN_DIR", "/tmp/cg-target/debug")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf", "http"), default="grpc", help="OTLP protocol of both binaries")
    p.add_argument("--requests", "-n", type=int, default=50, help="number of requests N (default 50)")
    p.add_argument("--concurrency", "-c", type=int, default=4, help="calls in flight (default 4)")
    p.add_argument("--mode", choices=("auto", "load", "single"), default="auto",
                   help="client load mode, or N single CLI calls; auto = load mode if the client has it")
    p.add_argument("--bin-dir", default=default_bin, help=f"directory of the built binaries (default $E2E_BIN_DIR or {default_bin})")
    p.add_argument("--server-bin", help="server binary (default <bin-dir>/my-service-server)")
    p.add_argument("--client-bin", help="client binary (default <bin-dir>/my-service-client)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the binaries in place instead of hard-linking (or copying) them into <workdir>/bin "
                        "first; the snapshot keeps a concurrent cargo build from swapping them mid-run")
    p.add_argument("--workdir", help="where logs and outputs go (default /tmp/e2e-work/whole-<protocol>-<time>)")
    p.add_argument("--telemetry-timeout", type=float, default=30.0, help="max seconds to wait for everything to come through rotel")
    p.add_argument("--client-timeout", type=float, default=300.0, help="max seconds for the client run")
    p.add_argument("--stop-timeout", type=float, default=20.0, help="max seconds for the server to exit after SIGTERM")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra server environment (repeatable)")
    p.add_argument("--client-env", action="append", default=[], metavar="KEY=VALUE", help="extra client environment (repeatable)")
    p.add_argument("--expect-extra", type=int, default=0,
                   help="self-check of the harness: expect N+K of everything, so a correct run must FAIL")
    a = p.parse_args(argv)
    if a.protocol == "http":
        a.protocol = "http/protobuf"
    if a.requests < 1 or a.concurrency < 1:
        p.error("--requests and --concurrency must be >= 1")
    a.server_bin = a.server_bin or os.path.join(a.bin_dir, "my-service-server")
    a.client_bin = a.client_bin or os.path.join(a.bin_dir, "my-service-client")
    for b in (a.server_bin, a.client_bin):
        if not os.access(b, os.X_OK):
            p.error(f"{b} is not an executable (build the rendered workspace, or pass --bin-dir)")
    if not a.workdir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        a.workdir = f"/tmp/e2e-work/whole-{a.protocol.replace('/', '-')}-{stamp}-{os.getpid()}"
    return a


def kv_list(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def snapshot(binary: str, bindir: Path) -> str:
    """Hard-link (same filesystem) or copy ``binary`` into ``bindir``: cargo replaces its outputs
    by writing new files, so the snapshot keeps the inode this run started with."""
    import shutil

    bindir.mkdir(parents=True, exist_ok=True)
    dest = bindir / os.path.basename(binary)
    try:
        os.link(binary, dest)
    except OSError:
        shutil.copy2(binary, dest)
    return str(dest)


def json_records(path: Path) -> list[dict]:
    """The lines of ``path`` that are JSON objects (the client's stderr also has other text)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def run_single_calls(args, url: str, env: dict[str, str], workdir: Path) -> tuple[list[procs.ClientResult], float]:
    """N separate client processes with ids e2e-0..e2e-N-1, `concurrency` at a time."""
    start = time.monotonic()
    deadline = start + args.client_timeout

    def one(i: int) -> procs.ClientResult:
        remaining = max(1.0, deadline - time.monotonic())
        return procs.run_client(args.client_bin, url, ["--id", f"e2e-{i}"], env=env,
                                timeout=min(60.0, remaining), workdir=workdir, name=f"client-{i}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(one, range(args.requests)))
    return results, time.monotonic() - start


def expected_present(t: Telemetry, n: int, server_svc: str, client_svc: str) -> bool:
    """Everything the checks need has come through rotel (may still be too much: the checks
    compare exactly afterwards)."""
    return (
        len(t.find_spans(CLIENT_SPAN, None, client_svc)) >= n
        and len(t.find_spans(SERVER_SPAN, "SERVER", server_svc)) >= n
        and len(t.find_spans(LOGIC_SPAN, service=server_svc)) >= n
        and len(t.find_spans(DB_SPAN, service=server_svc)) >= n
        and t.metric_total("myservice.requests.total", server_svc) >= n
        and t.metric_total("myservice.client.calls.total", client_svc) >= n
        and len({r.trace_id for r in t.find_logs(server_svc) if r.trace_id}) >= n
        and len({r.trace_id for r in t.find_logs(client_svc) if r.trace_id}) >= n
    )


def check_all(c: Checks, t: Telemetry, n: int, server_svc: str, client_svc: str,
              server_stdout: list[dict] | None, stdout_error: str | None) -> dict:
    figures: dict = {}
    client_spans = t.find_spans(CLIENT_SPAN, None)
    server_spans = t.find_spans(SERVER_SPAN, "SERVER")
    logic_spans = t.find_spans(LOGIC_SPAN, "INTERNAL")
    # A call to the database: CLIENT, as the database conventions ask.
    db_spans = t.find_spans(DB_SPAN, "CLIENT")
    figures.update(client_spans=len(client_spans), server_spans=len(server_spans),
                   inner_spans=len(logic_spans) + len(db_spans), all_spans=len(t.spans))

    c.section("spans")
    c.equal(len(client_spans), n, f"call spans ({CLIENT_SPAN})")
    c.equal(len(server_spans), n, f"server spans ({SERVER_SPAN}, SERVER)")
    c.equal(len(logic_spans) + len(db_spans), 2 * n, f"inner spans ({LOGIC_SPAN} + {DB_SPAN})")
    c.equal(len(logic_spans), n, f"{LOGIC_SPAN} spans")
    c.equal(len(db_spans), n, f"{DB_SPAN} spans")
    c.empty([f"{s.name}@{s.service_name}" for s in client_spans if s.service_name != client_svc],
            f"client spans have service.name {client_svc!r}")
    c.empty([f"{s.name}@{s.service_name}" for s in server_spans + logic_spans + db_spans if s.service_name != server_svc],
            f"server-side spans have service.name {server_svc!r}")
    c.empty([f"{s.name} trace={s.trace_id!r} id={s.span_id!r}" for s in t.spans
             if not HEX32.match(s.trace_id) or not HEX16.match(s.span_id) or s.trace_id == "0" * 32],
            "span trace/span ids are 32/16 hex digits, not zero")
    seen: dict[str, int] = {}
    for s in t.spans:
        seen[s.span_id] = seen.get(s.span_id, 0) + 1
    c.empty([f"{k} x{v}" for k, v in seen.items() if v > 1], "span ids are unique (no span received twice)")
    c.empty([f"{s.name} {s.span_id}: {s.status_message}" for s in t.spans if s.status_code == "ERROR"],
            "no span has status ERROR")

    by_id = {s.span_id: s for s in t.spans}
    client_ids = {s.span_id for s in client_spans}

    def call_of(server_span):
        # A server span's parent is the attempt that sent it (gRFC A72), a CLIENT child of the
        # logical call's INTERNAL span; recordings from before attempts had the call's CLIENT span.
        parent = by_id.get(server_span.parent_span_id or "")
        if parent is not None and parent.name == ATTEMPT_SPAN:
            call = by_id.get(parent.parent_span_id or "")
            return call if call is not None and call.trace_id == parent.trace_id else None
        return parent

    bad_parent = []
    for s in server_spans:
        parent = call_of(s)
        if parent is None or parent.span_id not in client_ids:
            bad_parent.append(f"server span {s.span_id} parent={s.parent_span_id} (not a client span)")
        elif parent.trace_id != s.trace_id:
            bad_parent.append(f"server span {s.span_id} trace {s.trace_id} != client trace {parent.trace_id}")
    c.empty(bad_parent, "every server span's parent is a client span of the same trace")
    c.empty([f"server span {s.span_id}: parent {by_id[s.parent_span_id].name} is {by_id[s.parent_span_id].kind}"
             for s in server_spans if s.parent_span_id in by_id and by_id[s.parent_span_id].kind != "CLIENT"],
            "every server span's direct parent is a CLIENT span (service graphs pair them)")
    children: dict[str, int] = {}
    for s in server_spans:
        call = call_of(s)
        key = call.span_id if call is not None else ""
        children[key] = children.get(key, 0) + 1
    c.empty([f"client span {s.span_id} has {children.get(s.span_id, 0)} server children" for s in client_spans
             if children.get(s.span_id, 0) != 1], "every client span has exactly one server span")
    server_ids = {s.span_id for s in server_spans}
    logic_ids = {s.span_id for s in logic_spans}
    c.empty([f"{s.span_id} parent={s.parent_span_id}" for s in logic_spans
             if s.parent_span_id not in server_ids or by_id[s.parent_span_id].trace_id != s.trace_id],
            f"every {LOGIC_SPAN} span is a child of a server span in its trace")
    c.empty([f"{s.span_id} parent={s.parent_span_id}" for s in db_spans
             if s.parent_span_id not in logic_ids or by_id[s.parent_span_id].trace_id != s.trace_id],
            f"every {DB_SPAN} span is a child of a {LOGIC_SPAN} span in its trace")
    # the requests are the client spans' traces (so a server that exported nothing still fails
    # the log and stdout checks below, not only the span counts)
    request_traces = {s.trace_id for s in client_spans}
    figures["traces"] = len(request_traces)
    c.equal(len(request_traces), n, "distinct request traces (of client spans)")
    server_traces = {s.trace_id for s in server_spans}
    c.check(server_traces == request_traces, "server span traces == client span traces",
            f"{len(request_traces - server_traces)} client traces without server span, "
            f"{len(server_traces - request_traces)} server traces without client span")

    c.section("metrics")
    total = t.metric_total("myservice.requests.total", server_svc)
    ok_total = t.metric_total("myservice.requests.total", server_svc, error="false")
    figures.update(requests_total=total, requests_total_error_false=ok_total)
    c.equal(total, n, "myservice.requests.total (last cumulative value per series, summed)")
    c.equal(ok_total, n, "myservice.requests.total{error=false}")
    temporalities = {p.temporality for p in t.find_points("myservice.requests.total")}
    c.equal(temporalities, {"CUMULATIVE"}, "myservice.requests.total temporality")
    c.equal(t.metric_total("rpc.server.call.duration", server_svc), n, "rpc.server.call.duration count")
    c.equal(t.metric_total("myservice.request.duration", server_svc), n, "myservice.request.duration count")
    active = [p.value for p in t.latest_points("myservice.requests.active", server_svc)]
    c.check(bool(active) and all(v == 0 for v in active), "myservice.requests.active ends at 0", f"last values {active}")
    c.equal(t.metric_total("myservice.client.calls.total", client_svc), n, "myservice.client.calls.total")
    c.equal(t.metric_total("rpc.client.call.duration", client_svc), n, "rpc.client.call.duration count")
    missing = [m for m in SERVER_METRICS + CLIENT_METRICS if m not in t.metric_names()]
    c.empty(missing, "all server and client metrics were received")
    units = {p.name: p.unit for p in t.data_points}
    c.empty([f"{m} unit={units.get(m)!r}" for m in ("rpc.server.call.duration", "rpc.client.call.duration",
                                                     "myservice.request.duration") if units.get(m) != "s"],
            "duration histograms are in seconds")

    c.section("logs")
    span_traces = {s.trace_id for s in t.spans}
    span_ids = {s.span_id for s in t.spans}
    logs_in_spans = [r for r in t.logs if r.trace_id]
    figures.update(log_records=len(t.logs), log_records_in_spans=len(logs_in_spans))
    c.check(len(logs_in_spans) > 0, "log records with trace ids were received", f"{len(t.logs)} records, none in a span")
    c.empty([f"{r.service_name}: {r.body!r} trace={r.trace_id}" for r in logs_in_spans if r.trace_id not in span_traces],
            "every log record's trace_id is the trace of a received span")
    c.empty([f"{r.service_name}: {r.body!r} span={r.span_id}" for r in logs_in_spans if r.span_id not in span_ids],
            "every log record's span_id is a received span")
    server_log_traces = {r.trace_id for r in t.find_logs(server_svc) if r.trace_id}
    client_log_traces = {r.trace_id for r in t.find_logs(client_svc) if r.trace_id}
    c.empty(sorted(request_traces - server_log_traces), "every request trace has server log records")
    c.empty(sorted(request_traces - client_log_traces), "every request trace has client log records")
    c.empty([f"{r.body!r}" for r in t.logs if r.severity_number is None or not r.severity_text],
            "log records have a severity")

    c.section("server stdout")
    if stdout_error:
        c.check(False, "every server stdout line is a JSON object", stdout_error)
    else:
        c.check(True, f"every server stdout line is a JSON object ({len(server_stdout)} lines)")
        c.empty(procs.check_bunyan_records(server_stdout), "server stdout records are bunyan with well-formed ids")
        c.empty([f"level {r.get('level')}: {r.get('msg')} {r.get('error', '')}".strip() for r in server_stdout
                 if isinstance(r.get("level"), int) and r["level"] >= 40],
                "server logged no warnings or errors (export failures show up here)")
        stdout_traces = {r["trace_id"] for r in server_stdout if "trace_id" in r}
        stdout_spans = {r["span_id"] for r in server_stdout if "span_id" in r}
        figures.update(stdout_lines=len(server_stdout), stdout_traces=len(stdout_traces))
        c.empty(sorted(request_traces - stdout_traces), "every request trace appears in the server's stdout")
        c.empty(sorted(stdout_traces - request_traces), "every trace id in the server's stdout is a request trace")
        server_side_ids = server_ids | logic_ids | {s.span_id for s in db_spans}
        c.empty(sorted(stdout_spans - server_side_ids), "every span id in the server's stdout is a server-side span")

    c.section("collector")
    c.empty(t.unparsed, "every OTLP request rotel forwarded decoded")
    c.empty([ln for ln in t.collector_lines if " ERROR " in ln or " WARN " in ln], "rotel logged no errors or warnings")
    return figures


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n_expect = args.requests + args.expect_extra
    server_svc, client_svc = "e2e-whole-server", "e2e-whole-client"
    t_begin = time.monotonic()
    figures: dict = {"protocol": args.protocol, "requests": args.requests, "concurrency": args.concurrency,
                     "workdir": str(workdir)}
    c = Checks()
    rotel = Rotel(workdir, name="rotel")
    server = None
    try:
        try:
            if not args.no_snapshot:
                args.server_bin = snapshot(args.server_bin, workdir / "bin")
                args.client_bin = snapshot(args.client_bin, workdir / "bin")
            rotel.start()
            figures["rotel_ready_s"] = round(rotel.ready_after_s, 3)
            common = {
                **rotel.otel_env(args.protocol),
                "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_BLRP_SCHEDULE_DELAY": "200",
            }
            server_env = {**common, "OTEL_SERVICE_NAME": server_svc, "FAILURE_RATE": "0", **kv_list(args.server_env)}
            # Load mode writes no line per call by default; this scenario checks the client's
            # log records too, so it asks for them.
            client_env = {**common, "OTEL_SERVICE_NAME": client_svc, "RUST_LOG": "info",
                          **kv_list(args.client_env)}
            server, port = procs.start_server(args.server_bin, workdir, server_env, name="server")
            figures["server_ready_s"] = round(server.ready_after_s, 3)
            figures["server_rss_kb_idle"] = server.rss_kb()
            url = f"http://127.0.0.1:{port}"
            mode = args.mode
            if mode == "auto":
                mode = "load" if procs.client_supports_load(args.client_bin) else "single"
            figures["mode"] = mode
            print(f"scenario whole: protocol={args.protocol} mode={mode} N={args.requests} "
                  f"concurrency={args.concurrency} rotel={rotel.grpc_port}/{rotel.http_port} server={port}")
            print(f"  workdir {workdir}")
            print(f"  server: {server.describe()}")

            if mode == "load":
                summary = procs.run_client_load(args.client_bin, url, requests=args.requests,
                                                concurrency=args.concurrency, env=client_env,
                                                timeout=args.client_timeout, workdir=workdir,
                                                extra_args=["--id", "e2e"])
                figures.update(client_elapsed_s=summary.elapsed_s, client_process_s=round(summary.duration_s, 3),
                               throughput_rps=round(summary.throughput_rps, 1), latency_ms=summary.latency_ms,
                               client_ok=summary.ok, client_errors=summary.errors)
                client_trace_ids = None
                client_problems = [f"client warned: {r.get('msg')} {r.get('error', '')}".strip()
                                   for r in json_records(workdir / "client-load.stderr")
                                   if isinstance(r.get("level"), int) and r["level"] >= 40]
                if summary.returncode != 0:
                    client_problems.append(f"client exited {summary.returncode}")
                if summary.requests != args.requests or summary.ok != args.requests or summary.errors:
                    client_problems.append(f"summary {summary.raw}")
            else:
                results, elapsed = run_single_calls(args, url, client_env, workdir)
                figures.update(client_elapsed_s=round(elapsed, 3),
                               throughput_rps=round(args.requests / elapsed, 1),
                               client_ok=sum(r.ok for r in results))
                lat = sorted(r.duration_s * 1000 for r in results)
                figures["process_latency_ms"] = {"p50": round(lat[len(lat) // 2], 1), "max": round(lat[-1], 1)}
                client_trace_ids = {r.trace_id for r in results if r.trace_id}
                client_problems = [f"call {i}: exit {r.returncode} {r.error or r.stderr[-200:]!r}"
                                   for i, r in enumerate(results) if not r.ok]

            figures["server_rss_kb_after_load"] = server.rss_kb()
            figures["server_peak_rss_kb"] = server.peak_rss_kb()
            rc = server.stop(timeout=args.stop_timeout)
            t_server_exit = time.monotonic()
            figures.update(server_exit_code=rc, server_stop_s=round(server.stop_duration_s() or 0, 3),
                           server_killed=server.killed)
        except (procs.ProcessError, RotelError, OSError) as e:
            print(f"\nscenario whole: could not run: {e}", file=sys.stderr)
            return 2

        try:
            t = rotel.wait_for(lambda t: expected_present(t, n_expect, server_svc, client_svc),
                               timeout=args.telemetry_timeout, what="all expected telemetry")
            figures["telemetry_complete_after_server_exit_s"] = round(time.monotonic() - t_server_exit, 3)
        except RotelError as e:
            print(f"\nscenario whole: could not run: {e}\n{rotel.tail()}", file=sys.stderr)
            return 2
        except TimeoutError as e:
            print(f"  (telemetry incomplete: {e}; checking what arrived)")
            t = rotel.telemetry()
            figures["telemetry_complete_after_server_exit_s"] = None

        try:
            server_stdout, stdout_error = server.stdout_json(), None
        except procs.JsonLinesError as e:
            server_stdout, stdout_error = None, str(e)

        c.section("client")
        c.empty(client_problems, f"client completed {args.requests} calls without error")
        c.section("server process")
        c.check(rc == 0 and not server.killed, "server exited 0 on SIGTERM within the timeout",
                f"exit code {rc}, killed={server.killed}")
        figures.update(check_all(c, t, n_expect, server_svc, client_svc, server_stdout, stdout_error))
        if client_trace_ids is not None:
            c.empty(sorted(client_trace_ids ^ {s.trace_id for s in t.find_spans(CLIENT_SPAN, None)}),
                    "trace ids printed by the client == trace ids of the client spans")
    finally:
        if server is not None and server.running():
            server.stop(timeout=5)
        rotel.close()
        if not args.no_snapshot:  # the links would keep replaced binaries' space alive
            import shutil

            shutil.rmtree(workdir / "bin", ignore_errors=True)

    figures["total_s"] = round(time.monotonic() - t_begin, 3)
    figures["failures"] = c.failures
    dump_json(workdir / "result.json", figures)
    print("\nfigures")
    for k, v in figures.items():
        if k != "failures":
            print(f"  {k}: {v}")
    return c.report(f"scenario whole ({args.protocol}, N={args.requests})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
