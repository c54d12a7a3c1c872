"""Unit tests of procs.py, with small Python stand-ins for the service binaries (fast, no build)
and the real server stdout in testdata/server_stdout.jsonl.

    $PY -m unittest discover -s ci/e2e -p 'test_*.py' -v
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
import tempfile
import textwrap
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def script(d: str, name: str, body: str) -> str:
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(f"#!{sys.executable}\n" + textwrap.dedent(body))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


class JsonLinesTest(unittest.TestCase):
    def test_real_server_stdout(self):
        recs = procs.read_json_lines(os.path.join(TESTDATA, "server_stdout.jsonl"))
        self.assertGreater(len(recs), 3)
        self.assertEqual(procs.check_bunyan_records(recs), [])
        in_span = [r for r in recs if "trace_id" in r]
        self.assertEqual(len(in_span), 6)  # 3 per request (server span, db query, business logic)
        self.assertTrue(any(r["msg"].startswith("[GRPC.SERVER - EVENT] ") for r in in_span))

    def test_bad_lines_are_all_reported(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "out.jsonl")
            with open(p, "w") as f:
                f.write('{"a":1}\nnot json\n\n[1,2]\n{"b":2}')  # no final newline: fine
            with self.assertRaises(procs.JsonLinesError) as cm:
                procs.read_json_lines(p)
            self.assertEqual([n for n, _, _ in cm.exception.bad], [2, 3, 4])
            self.assertIn("line 2", str(cm.exception))
            self.assertIn("not an object", str(cm.exception))

    def test_bunyan_problems(self):
        good = {"v": 0, "name": "s", "msg": "m", "level": 30, "time": "t", "pid": 1, "hostname": "h"}
        self.assertEqual(procs.check_bunyan_records([good]), [])
        bad = [{**good, "trace_id": "ABC", "span_id": "0123456789abcdef"}, {"msg": "x"},
               {**good, "trace_id": "0" * 32}]
        problems = procs.check_bunyan_records(bad)
        self.assertTrue(any("trace_id 'ABC'" in p for p in problems))
        self.assertTrue(any("record 2: missing" in p for p in problems))
        self.assertTrue(any("only one of trace_id/span_id" in p for p in problems))


class EnvAndProcTest(unittest.TestCase):
    def test_build_env_isolates(self):
        env = procs.build_env({"OTEL_SERVICE_NAME": "x", "DROP": None},
                              inherit={"PATH": "/bin", "OTEL_EXPORTER_OTLP_ENDPOINT": "h", "LISTEN_ADDR": "a",
                                       "DROP": "1"})
        self.assertEqual(env, {"PATH": "/bin", "OTEL_SERVICE_NAME": "x"})

    def test_rss(self):
        rss, peak = procs.rss_kb(os.getpid()), procs.peak_rss_kb(os.getpid())
        self.assertGreater(rss, 1000)
        self.assertGreaterEqual(peak, rss)
        self.assertIsNone(procs.rss_kb(2 ** 22 + 12345))

    def test_wait_for_port(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            self.assertLess(procs.wait_for_port("127.0.0.1", s.getsockname()[1], timeout=5), 5)
        port = procs.free_port()
        t0 = time.monotonic()
        with self.assertRaises(procs.ProcessError):
            procs.wait_for_port("127.0.0.1", port, timeout=0.3)
        self.assertLess(time.monotonic() - t0, 3)

    def test_early_exit_is_reported(self):
        with tempfile.TemporaryDirectory() as d:
            p = procs.ManagedProcess([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                                     procs.build_env(), d, "dies").start()
            with self.assertRaises(procs.ProcessError) as cm:
                procs.wait_for_port("127.0.0.1", procs.free_port(), timeout=10, proc=p)
            self.assertIn("exited with 3", str(cm.exception))
            self.assertIn("boom", str(cm.exception))

    def test_sigterm_then_sigkill(self):
        with tempfile.TemporaryDirectory() as d:
            graceful = procs.ManagedProcess(
                [sys.executable, "-c", "import signal,sys,time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0));"
                 " print('ready', flush=True); time.sleep(60)"], procs.build_env(), d, "graceful").start()
            stubborn = procs.ManagedProcess(
                [sys.executable, "-c", "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                 " print('ready', flush=True); time.sleep(60)"], procs.build_env(), d, "stubborn").start()
            for p in (graceful, stubborn):  # wait until the handlers are installed
                deadline = time.monotonic() + 10
                while "ready" not in p.stdout_text():
                    self.assertLess(time.monotonic(), deadline)
                    time.sleep(0.02)
                self.assertGreater(p.rss_kb(), 0)
            self.assertEqual(graceful.stop(timeout=5), 0)
            self.assertFalse(graceful.killed)
            self.assertEqual(stubborn.stop(timeout=0.5), -signal.SIGKILL)
            self.assertTrue(stubborn.killed)
            self.assertGreaterEqual(stubborn.stop_duration_s(), 0.5)
            self.assertIsNotNone(stubborn.last_rss_kb)


class FakeBinariesTest(unittest.TestCase):
    """The server/client helpers against stand-ins honouring the binaries' interface."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        d = self.dir.name
        self.server = script(d, "fake-server", """
            import json, os, signal, socket, sys
            host, port = os.environ["LISTEN_ADDR"].rsplit(":", 1)
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, int(port))); s.listen()
            print(json.dumps({"msg": "listening", "otel": os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")}), flush=True)
            signal.signal(signal.SIGTERM, lambda *a: (print(json.dumps({"msg": "bye"}), flush=True), sys.exit(0)))
            while True:
                s.accept()[0].close()
            """)
        self.client = script(d, "fake-client", """
            import json, sys
            a = sys.argv[1:]
            if "--help" in a:
                print("--server --id --requests --duration --concurrency --json"); sys.exit(0)
            if "--requests" in a:
                n = int(a[a.index("--requests") + 1])
                print(json.dumps({"requests": n, "ok": n - 1, "errors": {"UNAVAILABLE": 1}, "elapsed_s": 0.5,
                                  "throughput_rps": n / 0.5, "latency_ms": {"p50": 1, "p90": 2, "p99": 3, "max": 4}}))
                sys.exit(1)
            if a[a.index("--id") + 1] == "bad":
                print("error: UNAVAILABLE: nope"); print("trace_id: " + "b" * 32); sys.exit(1)
            print("result: success"); print("trace_id: " + "a" * 32)
            """)

    def tearDown(self):
        self.dir.cleanup()

    def test_server_start_and_stop(self):
        server, port = procs.start_server(self.server, self.dir.name,
                                          {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, ready_timeout=10)
        self.assertTrue(server.running())
        self.assertIn(f"LISTEN_ADDR=127.0.0.1:{port}", server.describe())
        self.assertEqual(server.stop(timeout=5), 0)
        recs = server.stdout_json()
        self.assertEqual([r["msg"] for r in recs], ["listening", "bye"])
        self.assertEqual(recs[0]["otel"], "http://127.0.0.1:1")

    def test_client_single_calls(self):
        ok = procs.run_client(self.client, "http://x", ["--id", "1"], workdir=self.dir.name, name="c1")
        self.assertTrue(ok.ok)
        self.assertEqual(ok.trace_id, "a" * 32)
        self.assertTrue(os.path.exists(os.path.join(self.dir.name, "c1.stdout")))
        bad = procs.run_client(self.client, "http://x", ["--id", "bad"])
        self.assertFalse(bad.ok)
        self.assertEqual((bad.returncode, bad.error, bad.trace_id), (1, "UNAVAILABLE: nope", "b" * 32))

    def test_client_load_summary(self):
        self.assertTrue(procs.client_supports_load(self.client))
        s = procs.run_client_load(self.client, "http://x", requests=10, concurrency=2)
        self.assertEqual((s.requests, s.ok, s.errors, s.returncode), (10, 9, {"UNAVAILABLE": 1}, 1))
        self.assertEqual(s.latency_ms["p99"], 3.0)
        with self.assertRaises(ValueError):
            procs.run_client_load(self.client, "http://x")


if __name__ == "__main__":
    unittest.main()
