#!/usr/bin/env python3
"""The reference service's own client, as the reference service wrote it: ``call_service`` of ci/bench/python-reference/server.py (a
CLIENT span ``grpc.client.ProcessRequest``, W3C ``traceparent`` injected by hand) calling a server
once, its telemetry exported as the reference service configures it (``OTEL_EXPORTER_OTLP_ENDPOINT``). Run
with the reference service's python ($PYREF_VENV) and the generated stubs on PYTHONPATH (scenario_python_reference.py does
both). Prints ``trace_id=<hex>`` of the call, and exits 1 when the call fails.

    PYTHONPATH=<stubs>:ci/bench/python-reference $PYREF_VENV/bin/python ci/e2e/python_reference_client.py 127.0.0.1 50051 some-id
"""

import asyncio
import os
import sys

# This directory holds the harness's h2.py, which would shadow the h2 package grpclib imports.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace import SpanProcessor  # noqa: E402

import server  # noqa: E402  # the reference service's module: importing it sets up its telemetry (its serve() runs only as __main__)
from myservice_pb2 import MyRequest  # noqa: E402


async def main(host: str, port: int, request_id: str) -> int:
    ids: list[str] = []

    class Remember(SpanProcessor):
        """Notes the trace of the reference service's CLIENT span as it starts (call_service returns no span)."""

        def on_start(self, span, parent_context=None):
            if span.name == "grpc.client.ProcessRequest":
                ids.append(format(span.get_span_context().trace_id, "032x"))

    provider = trace.get_tracer_provider()
    provider.add_span_processor(Remember())
    try:
        response = await server.call_service(host, port, MyRequest(id=request_id))
        print(f"result={response.result}")
        code = 0
    except Exception as e:  # noqa: BLE001 - the scenario reads the outcome from the exit status
        print(f"error: {e!r}", file=sys.stderr)
        code = 1
    for trace_id in ids:
        print(f"trace_id={trace_id}")
    provider.shutdown()  # flushes the batch processor: the span reaches the collector before exit
    return code


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(f"usage: {sys.argv[0]} HOST PORT REQUEST_ID")
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
