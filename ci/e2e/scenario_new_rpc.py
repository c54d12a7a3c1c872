#!/usr/bin/env python3
"""Scenario "a new RPC": a method added to the proto and to the handler, and nothing else, is
served, traced and measured like the example's own.

ci/add-rpc.sh makes the edit on a fresh render (one ``rpc`` line, one handler method that answers
with the request's id), builds it, and runs this against the built server:

1. rotel (forwarding to the harness's OTLP receiver) and the server exporting to it;
2. a call of --method with a MyRequest, over HTTP/2 (nghttp), with a W3C traceparent;
3. check: the answer is OK and carries the id; the method's SERVER span arrives, named
   grpc.server.<Method>, with its rpc.method, OK status, and the caller's trace as parent;
   rpc.server.call.duration has a point for the method; every stdout line is JSON, no panic.

    $PY ci/e2e/scenario_new_rpc.py --bin-dir <render>/target/debug --method LookupRequest
"""

from __future__ import annotations

import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import h2  # noqa: E402
from common import Run  # noqa: E402
from rotel import Telemetry  # noqa: E402

TITLE = "scenario new rpc"
SERVICE = "e2e-new-rpc"


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--method", required=True, help="the added method's name, e.g. LookupRequest")
    p.add_argument("--grpc-service", default=h2.PROCESS_PATH.split("/")[1],
                   help="package.Service of the method (default: the example service's)")
    p.add_argument("--telemetry-timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "new-rpc")


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rpc_method = f"{a.grpc_service}/{a.method}"
    rotel = run.rotel()
    rotel.start()
    server, port = run.start_server({
        **rotel.otel_env("grpc"),
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    })
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    request_id = f"new-rpc-{secrets.token_hex(4)}"
    answer = h2.call(f"http://127.0.0.1:{port}", f"/{rpc_method}", h2.grpc_frame(h2.my_request(request_id)),
                     headers={**h2.GRPC_HEADERS, "traceparent": f"00-{trace_id}-{parent_id}-01"}, want_body=True)
    f.update(method=rpc_method, grpc_status=answer.grpc_status)

    def complete(t: Telemetry) -> bool:
        return bool(t.find_spans(f"grpc.server.{a.method}", "SERVER", SERVICE)
                    and t.find_points("rpc.server.call.duration", SERVICE, **{"rpc.method": rpc_method}))

    try:
        t = rotel.wait_for(complete, timeout=a.telemetry_timeout, what=f"the span and metric of {rpc_method}")
    except TimeoutError as e:
        print(f"  (telemetry incomplete: {e}; checking what arrived)")
        t = rotel.telemetry()
    server.stop(timeout=15)

    c.section("the call")
    c.equal(answer.code, "OK", f"{rpc_method} answers OK")
    c.check(request_id.encode() in answer.body, "the answer carries the request's id", repr(answer.body[:80]))

    c.section("its telemetry")
    # nghttp sends the call twice to read the body (h2.call with want_body): a span each.
    spans = t.find_spans(f"grpc.server.{a.method}", "SERVER", SERVICE)
    c.check(bool(spans), f"a SERVER span grpc.server.{a.method} per call", f"{len(spans)}")
    c.empty([s.attributes.get("rpc.method") for s in spans if s.attributes.get("rpc.method") != rpc_method],
            f"their rpc.method is {rpc_method}")
    c.empty([s.attributes.get("rpc.status_code") for s in spans if s.attributes.get("rpc.status_code") != "OK"],
            "their rpc.status_code is OK")
    c.empty([(s.trace_id, s.parent_span_id) for s in spans if (s.trace_id, s.parent_span_id) != (trace_id, parent_id)],
            "they continue the caller's trace")
    points = t.find_points("rpc.server.call.duration", SERVICE, **{"rpc.method": rpc_method})
    c.check(bool(points), f"rpc.server.call.duration has a point for {rpc_method}")
    common.server_stdout_checks(c, server)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "new-rpc"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
