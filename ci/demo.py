#!/usr/bin/env python3
"""The demo's second half (ci/demo.sh builds, this runs): a real collector (rotel) on free ports
exporting to the e2e harness's OTLP receiver, the rendered server and a few client calls against
it (one failing), then what arrived, printed for a person: each call's trace as a tree, the
metrics with their values, the log records with their ids beside the matching JSON line.

    $ROTEL_VENV/bin/python ci/demo.py --server-bin B --client-bin B --workdir DIR [--workspace DIR]

Every process it starts is stopped on exit, on an error and on Ctrl-C. Run it with the python of
$ROTEL_VENV (ci/lib.sh ensure_rotel): the harness decodes OTLP with grpcio and opentelemetry-proto.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))

import procs  # noqa: E402
from otlp_receiver import Span, Telemetry  # noqa: E402
from rotel import Rotel  # noqa: E402

CLIENT_SPAN = "grpc.client.ProcessRequest"
SERVER_SPAN = "grpc.server.ProcessRequest"
LOGIC_SPAN = "process-business-logic"
DB_SPAN = "database-query"
# The service's own three metrics (the Python service this template replaces had these, by these names).
OWN_METRICS = ("requests.total", "request.duration", "requests.active")
# Span attributes worth a glance; the rest stay in the collector.
KEY_ATTRIBUTES = ("rpc.method", "rpc.grpc.status_code", "rpc.response.status_code", "request.id",
                  "server.address", "server.port", "db.system.name", "db.operation.name",
                  "db.query.text", "error.type", "otel.status_description")

BOLD, DIM, RED, GREEN, RESET = ("\x1b[1m", "\x1b[2m", "\x1b[31m", "\x1b[32m", "\x1b[0m") \
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else ("",) * 5


def heading(text: str) -> None:
    print(f"\n{BOLD}== {text}{RESET}")


def ms(span: Span) -> str:
    return f"{span.duration_s * 1000:.1f} ms"


def attrs_text(attributes: dict, keys=KEY_ATTRIBUTES) -> str:
    shown = [f"{k}={attributes[k]}" for k in keys if k in attributes]
    return " ".join(shown)


def print_tree(spans: list[Span], trace_id: str) -> None:
    mine = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id for s in mine}
    children: dict[str | None, list[Span]] = {}
    for s in mine:
        parent = s.parent_span_id if s.parent_span_id in ids else None
        children.setdefault(parent, []).append(s)

    def walk(span: Span, prefix: str, last: bool, root: bool) -> None:
        branch = "" if root else ("└─ " if last else "├─ ")
        status = f" {RED}ERROR{RESET} {span.status_message}" if span.status_code == "ERROR" else ""
        extra = attrs_text(span.attributes)
        print(f"{prefix}{branch}{BOLD}{span.name}{RESET} [{span.kind}, {span.service_name}] "
              f"{ms(span)}{status}  {DIM}span_id={span.span_id}{RESET}")
        if extra:
            print(f"{prefix}{'' if root else ('   ' if last else '│  ')}    {DIM}{extra}{RESET}")
        kids = sorted(children.get(span.span_id, []), key=lambda s: s.start_time_unix_nano)
        for i, kid in enumerate(kids):
            walk(kid, prefix + ("" if root else ("   " if last else "│  ")), i == len(kids) - 1, False)

    for root in sorted(children.get(None, []), key=lambda s: s.start_time_unix_nano):
        walk(root, "  ", True, True)


# Gauges a one-call client records as it stops, which is all it exports: the calls take less than one
# export interval (OTEL_METRIC_EXPORT_INTERVAL), so the only data point is the one of its exit flush.
# Shown with what they mean, rather than as the state the calls saw.
AT_EXIT = {
    "endpoints.ready": "as the client exited: it takes its replicas out of the balancer when it stops; "
                       "a long-running client exports how many report SERVING every interval",
}


def metric_value(p) -> str:
    if p.type in ("Sum", "Gauge"):
        return f"{p.value}"
    if p.count is not None:
        avg = f", mean {p.sum / p.count:.4g}" if p.count and p.sum is not None else ""
        return f"count {p.count}, sum {p.sum:.4g}{avg}" if p.sum is not None else f"count {p.count}"
    return "?"


def print_metrics(t: Telemetry) -> None:
    latest = {}
    for p in t.data_points:
        key = (p.service_name, p.name, tuple(sorted((k, str(v)) for k, v in p.attributes.items())))
        if key not in latest or p.time_unix_nano >= latest[key].time_unix_nano:
            latest[key] = p
    for (service, name, _), p in sorted(latest.items(), key=lambda kv: (str(kv[0][0]), kv[0][1], kv[0][2])):
        attrs = " ".join(f"{k}={v}" for k, v in sorted(p.attributes.items()))
        at_exit = next((why for suffix, why in AT_EXIT.items()
                        if name.endswith("." + suffix) and str(service).endswith("-client")), None)
        value = metric_value(p) + (f" {DIM}({at_exit}){RESET}" if at_exit else "")
        print(f"  {service:<24} {BOLD}{name}{RESET} ({p.type}{', ' + p.unit if p.unit else ''}) "
              f"= {value}  {DIM}{attrs}{RESET}")


def print_logs(t: Telemetry, json_lines: list[dict]) -> None:
    """Each log record, and the JSON line (server stdout, client stderr) with its ids and message:
    bunyan prefixes the message of a line in a span with "[SPAN - EVENT] "."""
    def matches(line: dict, rec) -> bool:
        msg = str(line.get("msg", ""))
        body = rec.body if isinstance(rec.body, str) else json.dumps(rec.body)
        return (line.get("trace_id") == rec.trace_id and line.get("span_id") == rec.span_id
                and line.get("name") == rec.service_name and (msg == body or msg.endswith("] " + body)))

    shown = ("time", "level", "msg", "trace_id", "span_id")
    for rec in sorted(t.logs, key=lambda r: r.time_unix_nano or r.observed_time_unix_nano):
        body = rec.body if isinstance(rec.body, str) else json.dumps(rec.body)
        ids = f"trace_id={rec.trace_id} span_id={rec.span_id}" if rec.trace_id else "(outside any span)"
        print(f"  {rec.severity_text or '-':<5} {rec.service_name}: {body}")
        print(f"        {DIM}OTLP log record :{RESET} {ids}")
        line = next((ln for ln in json_lines if matches(ln, rec)), None)
        if line:
            trimmed = {k: line[k] for k in shown if k in line}
            print(f"        {DIM}its JSON line   :{RESET} {json.dumps(trimmed, separators=(',', ':'))} "
                  f"{DIM}(+{len(line) - len(trimmed)} fields){RESET}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-bin", required=True)
    p.add_argument("--client-bin", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--workspace", help="the rendered workspace (for the by-hand commands)")
    a = p.parse_args(argv)
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM (from demo.sh's trap) unwind through the finally below. demo.sh runs this
    # in the background, where a non-interactive shell leaves SIGINT ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    rotel = Rotel(workdir)
    server = None
    try:
        heading("starting a collector (rotel), exporting to the demo's own OTLP receiver")
        rotel.start()
        print(f"  rotel listens on {rotel.grpc_endpoint} (OTLP/gRPC) and {rotel.http_endpoint} (OTLP/HTTP); "
              f"it forwards to {rotel.receiver.grpc_endpoint}")
        # Short export delays: the demo shows what arrived a second after the calls.
        otel = {**rotel.otel_env("grpc"), "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
                "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
        heading("starting the server")
        # Started here rather than by procs.start_server, so that an interrupt while it comes up
        # still finds it in `server` (start_server cleans up on errors, not on Ctrl-C).
        port = procs.free_port()
        server = procs.ManagedProcess(
            [a.server_bin], procs.build_env({**otel, "FAILURE_RATE": "0", "DRAIN_DELAY_SECS": "0",
                                            "LISTEN_ADDR": f"127.0.0.1:{port}"}),
            workdir, "server").start()
        procs.wait_for_port("127.0.0.1", port, 30, proc=server)
        url = f"http://127.0.0.1:{port}"
        print(f"  {Path(a.server_bin).name} on 127.0.0.1:{port}, its JSON lines in {workdir}/server.stdout")

        heading("calling it with the client")
        client_env = {**otel, "RUST_LOG": "warn"}
        calls = [("demo-42", "a call that succeeds"), ("", "an empty id: the server rejects it")]
        results = []
        for call_id, what in calls:
            r = procs.run_client(a.client_bin, url, ["--id", call_id], client_env, timeout=30)
            results.append(r)
            outcome = f"{GREEN}ok{RESET}: {r.result}" if r.ok else f"{RED}failed{RESET}: {r.error}"
            print(f"  --id {shlex.quote(call_id)} ({what}): {outcome}; trace_id {r.trace_id} "
                  f"({r.duration_s:.2f} s)")
        traces = [r.trace_id for r in results if r.trace_id]

        heading("stopping the server (SIGTERM: drain, flush telemetry, exit)")
        server.stop(timeout=20)
        print(f"  exited {server.returncode}")
        t = rotel.wait_for(
            lambda t: all(len([s for s in t.spans if s.trace_id == tid]) >= 2 for tid in traces)
            and all(any(p.name.endswith(m) for p in t.data_points) for m in OWN_METRICS)
            and len(t.logs) >= 1,
            timeout=20, what="the calls' spans, the metrics and the logs")

        for r, (call_id, what) in zip(results, calls):
            heading(f"trace {r.trace_id}: {what}")
            print_tree(t.spans, r.trace_id)
        heading(f"metrics received ({len({p.name for p in t.data_points})} metrics, "
                f"{len(t.data_points)} data points; last value of each series)")
        print_metrics(t)
        heading(f"log records received ({len(t.logs)}), each beside its JSON line (server stdout, client stderr)")
        client_lines = [json.loads(ln) for r in results for ln in r.stderr.splitlines() if ln.startswith("{")]
        print_logs(t, server.stdout_json() + client_lines)

        heading("what the collector received, in all")
        print(f"  {len(t.spans)} spans, {len(t.data_points)} metric data points, {len(t.logs)} log records "
              f"(forwarded by rotel to the demo's receiver over OTLP/gRPC)")
        by_hand(a, rotel)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping what the demo started", file=sys.stderr)
        return 130
    finally:
        if server is not None and server.running():
            server.stop(timeout=10)
        rotel.close()


def by_hand(a: argparse.Namespace, rotel: Rotel) -> None:
    heading("the same by hand")
    ws = a.workspace or "<the rendered workspace>"
    server = Path(a.server_bin).name
    client = Path(a.client_bin).name
    demo = os.path.abspath(__file__)
    print(f"""  cd {ws}
  cargo run -p {server}                          # terminal 1: the server (JSON lines on stdout)
  cargo run -p {client} -- --id hello            # terminal 2: one call; --id '' fails
  cargo run -p {client} -- --method stream-results --count 5   # a server stream: each result as it arrives
  cargo run -p {client} -- --requests 1000       # load mode: progress, then a summary
  OTEL_TRACES_EXPORTER=console cargo run -p {client} -- --id hello   # spans on stderr, no collector
  # this demo again on the built binaries (rotel and the receiver on free ports):
  {shlex.quote(sys.executable)} {demo} --server-bin {a.server_bin} --client-bin {a.client_bin} --workdir /tmp/demo-run""")
    compose = shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0
    if compose:
        print(f"""
  # Grafana instead (Docker Compose is here): the collector with Tempo, Prometheus and Loki
  cd {ws} && docker compose up -d otel-lgtm     # then the server and client as above, and
  # http://localhost:3000 -> Explore: the trace (client and server spans), the metrics, the logs""")
    else:
        print("\n  With Docker and Compose: `docker compose up -d otel-lgtm` in the workspace starts a collector "
              "with Grafana on http://localhost:3000 (compose.yaml); the server and client send there by default.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
