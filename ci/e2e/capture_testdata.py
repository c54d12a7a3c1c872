#!/usr/bin/env python3
"""Regenerate testdata/ from the real processes: every OTLP request rotel forwarded to the
harness's receiver (otlp_detailed.bin, read with otlp_receiver.read_recording) for two
successful calls (with a periodic metric export between them), a collector restart, and one
failed call (FAILURE_RATE=1), plus the first server's stdout. The unit tests
(test_otlp_receiver.py, test_scenario_whole.py, test_procs.py) are written against these files;
rerun this only when the template's telemetry changes, and update the tests with it.

    "$ROTEL_VENV/bin/python" ci/e2e/capture_testdata.py [--bin-dir /tmp/cg-target/debug]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from otlp_receiver import Receiver  # noqa: E402
from rotel import Rotel  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", default=os.environ.get("E2E_BIN_DIR", "/tmp/cg-target/debug"))
    args = ap.parse_args()
    server_bin = os.path.join(args.bin_dir, "my-service-server")
    client_bin = os.path.join(args.bin_dir, "my-service-client")
    work = tempfile.mkdtemp(prefix="e2e-capture-")
    fast = {"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}
    out = os.path.join(HERE, "testdata")
    os.makedirs(out, exist_ok=True)
    sample = os.path.join(out, "otlp_detailed.bin")
    if os.path.exists(sample):
        os.remove(sample)  # the receiver appends
    with Rotel(work, receiver=Receiver(http_port=None, record=sample)) as rotel:
        env = {**rotel.otel_env("grpc"), **fast}
        server, port = procs.start_server(server_bin, work, env, name="server-ok")
        for i in (1, 2):
            r = procs.run_client(client_bin, f"http://127.0.0.1:{port}", ["--id", f"sample-{i}"], env=env)
            assert r.ok, r
            if i == 1:  # let one periodic export go out, so the sample has a cumulative series
                # with two points (1, then 2 in the final export at shutdown)
                rotel.wait_for(lambda t: t.find_points("myservice.requests.total"), timeout=20)
        assert server.stop(timeout=20) == 0
        rotel.wait_for(lambda t: len(t.find_spans("grpc.server.ProcessRequest")) >= 2, timeout=20)

        rotel.restart()
        env = {**rotel.otel_env("http/protobuf"), **fast}
        server2, port = procs.start_server(server_bin, work, {**env, "FAILURE_RATE": "1"}, name="server-fail")
        r = procs.run_client(client_bin, f"http://127.0.0.1:{port}", ["--id", "sample-fail"], env=env)
        assert r.returncode == 1 and r.error, r
        assert server2.stop(timeout=20) == 0
        rotel.wait_for(lambda t: len(t.find_spans("grpc.server.ProcessRequest")) >= 3
                       and t.metric_total("myservice.requests.total") >= 3, timeout=20)
    shutil.copy(server.stdout_path, os.path.join(out, "server_stdout.jsonl"))
    print(f"wrote {sample} and server_stdout.jsonl (work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
