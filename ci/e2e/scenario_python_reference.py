#!/usr/bin/env python3
"""Scenario 9, "the Python grpclib reference service, both directions": the render and the reference service's grpclib
service (ci/bench/python-reference/server.py, run as the reference service wrote it) call each other, every process
exporting through one rotel, and in each trace the SERVER span's direct parent must be the
caller's CLIENT span, the pair trace backends draw service graphs from:

1. the render's client (one call, `--lb dns`: the balancer, so the attempt span is the one a
   balanced call makes) → the reference service: the reference service's `grpc.server.ProcessRequest` span is a child of
   the client's `grpc.client.attempt.ProcessRequest` (CLIENT), itself under the call's span;
2. the reference service's own client function (`call_service`, ci/e2e/python_reference_client.py) → the render's server:
   the render's `grpc.server.ProcessRequest` is a child of the reference service's `grpc.client.ProcessRequest`
   (CLIENT).

It needs the reference service's packages beside the harness's: $PYREF_VENV (`source ci/lib.sh &&
ensure_python_reference_venv`), or --reference-python. The stubs the reference service imports are generated from
examples/default's proto as ci/bench/bench.py does.

    $PY ci/e2e/scenario_python_reference.py --bin-dir /tmp/cg-target/release
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import procs  # noqa: E402
from checks import Checks  # noqa: E402
from common import ATTEMPT_SPAN, CLIENT_SPAN, SERVER_SPAN, Run  # noqa: E402
from otlp_receiver import Telemetry  # noqa: E402

TITLE = "scenario python-reference"
SERVICE, CLIENT_SERVICE = "e2e-pyref-render-server", "e2e-pyref-render-client"
REFERENCE_SERVICE = "my-python-async-service"  # the reference service hard-codes its service.name
REFERENCE_DIR = HERE.parent / "bench" / "python-reference"
PROTO = HERE.parent.parent / "examples/default/crates/my-service-proto/proto/myservice/v1/my_service.proto"


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    default_python = os.path.join(os.environ.get("PYREF_VENV", os.path.expanduser("~/.cache/cg-template/python-reference-venv")),
                                  "bin", "python")
    p.add_argument("--reference-python", default=default_python,
                   help=f"python with the reference service's packages (default $PYREF_VENV/bin/python: {default_python})")
    p.add_argument("--telemetry-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "python-reference")


def reference_stubs(python: str, workdir: Path) -> Path:
    """myservice_pb2.py and myservice_grpc.py, the modules the reference service imports (as bench.py makes them)."""
    out = workdir / "reference-stubs"
    out.mkdir(parents=True, exist_ok=True)
    (out / "myservice.proto").write_bytes(PROTO.read_bytes())
    env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run([python, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--grpclib_python_out=.",
                    "myservice.proto"], cwd=out, env=env, check=True, capture_output=True)
    return out


def check_pair(c: Checks, t: Telemetry, label: str, trace_id: str, server_service: str, client_service: str,
               client_name: str) -> None:
    """In trace ``trace_id``: one SERVER span of ``server_service``, whose direct parent is the
    CLIENT span ``client_name`` of ``client_service``."""
    spans = [s for s in t.spans if s.trace_id == trace_id]
    servers = [s for s in spans if s.kind == "SERVER" and s.service_name == server_service]
    c.equal(len(servers), 1, f"{label}: one SERVER span of {server_service} in the call's trace")
    for server in servers:
        parent = next((s for s in spans if s.span_id == server.parent_span_id), None)
        c.check(parent is not None and parent.service_name == client_service and parent.name == client_name,
                f"{label}: the server span's parent is {client_name} of {client_service}, same trace",
                f"parent {parent.name if parent else None!r} of {parent.service_name if parent else None!r}")
        c.check(parent is not None and parent.kind == "CLIENT",
                f"{label}: the server span's direct parent is a CLIENT span (service graphs pair them)",
                f"its kind is {parent.kind if parent else None!r}")


def check_all(c: Checks, t: Telemetry, to_reference: str, from_reference: str) -> None:
    """Both directions: ``to_reference`` is the trace of the render client's call to the reference service,
    ``from_reference`` that of the reference service's call to the render's server."""
    check_pair(c, t, "render -> reference", to_reference, REFERENCE_SERVICE, CLIENT_SERVICE, ATTEMPT_SPAN)
    attempt = next((s for s in t.spans if s.trace_id == to_reference and s.name == ATTEMPT_SPAN), None)
    call = next((s for s in t.spans if s.trace_id == to_reference and s.name == CLIENT_SPAN), None)
    c.check(attempt is not None and call is not None and attempt.parent_span_id == call.span_id,
            "render -> reference: the attempt span is under the client's call span")
    c.check(attempt is not None and bool(attempt.attributes.get("network.peer.address")),
            "render -> reference: the attempt span names the replica it reached (network.peer.address)",
            str(attempt.attributes if attempt else None))
    check_pair(c, t, "reference -> render", from_reference, SERVICE, REFERENCE_SERVICE, CLIENT_SPAN)


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    if not os.access(a.reference_python, os.X_OK):
        raise common.CouldNotRun(f"{a.reference_python} is not there: the reference service's packages are needed "
                                 "(source ci/lib.sh && ensure_python_reference_venv, or --reference-python)")
    try:
        stubs = reference_stubs(a.reference_python, run.workdir)
    except subprocess.CalledProcessError as e:
        raise common.CouldNotRun(f"cannot generate the reference service's stubs: {e.stderr}") from e
    rotel = run.rotel().start()
    endpoint = rotel.grpc_endpoint
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    reference_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "DB_LATENCY_MS": "0",
                "PYTHONPATH": f"{stubs}{os.pathsep}{REFERENCE_DIR}"}

    # 1. the render's client -> the reference service's server
    reference_port = procs.free_port()
    python = procs.ManagedProcess([a.reference_python, str(REFERENCE_DIR / "server.py")],
                                procs.build_env({**reference_env, "LISTEN_ADDR": f"127.0.0.1:{reference_port}"}),
                                run.workdir, "reference-server").start()
    run.processes.append(python)
    procs.wait_for_port("127.0.0.1", reference_port, 30, proc=python)
    to_reference = procs.run_client(run.client_bin, f"http://127.0.0.1:{reference_port}", ["--id", "render-to-reference"],
                               timeout=60, workdir=run.workdir, name="client-to-reference",
                               env=run.client_env({**otel, "OTEL_SDK_DISABLED": "false", "RUST_LOG": "info",
                                                   "OTEL_SERVICE_NAME": CLIENT_SERVICE, "LB_POLICY": "dns"}))
    c.check(to_reference.ok, "the render's client called the reference service", (to_reference.stdout + to_reference.stderr)[-500:])
    # SIGINT: the reference service has no signal handler; asyncio.run ends and the SDK flushes at exit.
    python.stop(sig=signal.SIGINT, timeout=15)

    # 2. the reference service's client -> the render's server
    server, port = run.start_server({**otel, "OTEL_SERVICE_NAME": SERVICE, "OTEL_METRIC_EXPORT_INTERVAL": "500"})
    cp = subprocess.run([a.reference_python, str(HERE / "python_reference_client.py"), "127.0.0.1", str(port), "reference-to-render"],
                        env=procs.build_env(reference_env), capture_output=True, text=True, timeout=60)
    (run.workdir / "reference-client.stdout").write_text(cp.stdout)
    (run.workdir / "reference-client.stderr").write_text(cp.stderr)
    c.equal(cp.returncode, 0, "the reference service's client called the render's server")
    from_reference = next((line.split("=", 1)[1] for line in cp.stdout.splitlines() if line.startswith("trace_id=")), "")
    c.equal(server.stop(), 0, "server exit status after SIGTERM")

    trace_to, f["trace_render_to_reference"] = to_reference.trace_id or "", to_reference.trace_id
    f["trace_reference_to_render"] = from_reference

    def arrived(t: Telemetry) -> bool:
        def servers(trace_id: str, service: str) -> bool:
            return any(s.trace_id == trace_id and s.kind == "SERVER" and s.service_name == service for s in t.spans)

        def clients(trace_id: str, service: str) -> bool:
            return any(s.trace_id == trace_id and s.kind == "CLIENT" and s.service_name == service for s in t.spans)

        return (servers(trace_to, REFERENCE_SERVICE) and clients(trace_to, CLIENT_SERVICE)
                and servers(from_reference, SERVICE) and clients(from_reference, REFERENCE_SERVICE))

    try:
        t = rotel.wait_for(arrived, timeout=a.telemetry_timeout, what="both calls' spans from both sides")
    except TimeoutError as e:
        c.check(False, "both calls' spans arrived from both sides", str(e))
        t = rotel.telemetry()
    f["spans"] = len(t.spans)
    check_all(c, t, trace_to, from_reference)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "python-reference"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
