#!/usr/bin/env python3
"""Regenerate the testdata/ files the unit tests of scenarios 2-6 read (test_scenarios.py),
from the real processes:

- otlp_tracestate.bin: what rotel forwarded to the harness's receiver for one call that carried
  traceparent+tracestate (otlp_receiver.read_recording);
- server_stdout_collector_down.jsonl: a server exporting to a closed port for 3000 calls, then
  SIGTERM; only its first 3 lines and its WARN/ERROR lines are kept (the rest is 3 INFO lines
  per call);
- h2load_ok.txt, h2load_431.txt: h2load's report for a served call, and for a header list over
  the server's limit;
- nghttp_internal.txt, nghttp_health.txt: nghttp -v for a call answered INTERNAL (invalid
  UTF-8), and nghttp's plain output (the body) of a health check.

    "$ROTEL_VENV/bin/python" ci/e2e/capture_scenario_testdata.py [--bin-dir /tmp/cg-target/release]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h2  # noqa: E402
import procs  # noqa: E402
from otlp_receiver import Receiver  # noqa: E402
from rotel import Rotel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "testdata")
FAST = {"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.environ.get("E2E_BIN_DIR", "/tmp/cg-target/release"))
    args = ap.parse_args()
    server_bin = os.path.join(args.bin_dir, "my-service-server")
    client_bin = os.path.join(args.bin_dir, "my-service-client")
    work = tempfile.mkdtemp(prefix="e2e-capture2-")
    off = {"OTEL_SDK_DISABLED": "true"}

    sample = os.path.join(OUT, "otlp_tracestate.bin")
    if os.path.exists(sample):
        os.remove(sample)  # the receiver appends
    with Rotel(work, name="tracestate", receiver=Receiver(http_port=None, record=sample)) as rotel:
        server, port = procs.start_server(server_bin, work, {**rotel.otel_env("grpc"), **FAST}, name="server-ts")
        base = f"http://127.0.0.1:{port}"
        body = os.path.join(work, "body.bin")
        with open(body, "wb") as f:
            f.write(h2.grpc_frame(h2.my_request("capture-ts")))
        tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        r = h2.h2load(base + h2.PROCESS_PATH, body, [("traceparent", tp), ("tracestate", "rojo=00f067aa0ba902b7")])
        assert r.all_2xx, r.output
        with open(os.path.join(OUT, "h2load_ok.txt"), "w") as f:
            f.write(r.output)
        r = h2.h2load(base + h2.PROCESS_PATH, body, [("baggage", "k=" + "v" * 20000)])
        with open(os.path.join(OUT, "h2load_431.txt"), "w") as f:
            f.write(r.output)
        with open(body + ".bad", "wb") as f:
            f.write(h2.grpc_frame(h2.my_request(b"\xff")))
        cp = subprocess.run([h2.tool("nghttp"), "-v", "--no-dep", "-H", "content-type: application/grpc", "-H",
                             "te: trailers", "-d", body + ".bad", base + h2.PROCESS_PATH], capture_output=True, text=True)
        with open(os.path.join(OUT, "nghttp_internal.txt"), "w") as f:
            f.write(cp.stdout)
        _, resp = h2.health(base)
        with open(os.path.join(OUT, "nghttp_health.txt"), "wb") as f:
            f.write(resp.body)
        assert server.stop(timeout=20) == 0
        rotel.wait_for(lambda t: t.find_spans("grpc.server.ProcessRequest"), timeout=20)

    dead = procs.free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", **FAST}
    server, port = procs.start_server(server_bin, work, env, name="server-down")
    s = procs.run_client_load(client_bin, f"http://127.0.0.1:{port}", requests=3000, concurrency=32, env=off)
    assert s.ok == 3000, s
    assert server.stop(timeout=30) == 0
    records = server.stdout_json()
    kept = records[:3] + [r for r in records[3:] if r.get("level", 0) >= 40]
    with open(os.path.join(OUT, "server_stdout_collector_down.jsonl"), "w") as f:
        for r in kept:
            f.write(json.dumps(r, separators=(",", ":")) + "\n")
    print(f"wrote testdata/ files (work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
