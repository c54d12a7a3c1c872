"""The assertions of scenario_whole.py, run on the real sample (testdata/) with and without
deliberate breakage: each breakage must add exactly the failure that describes it.

    $PY -m unittest discover -s ci/e2e -p 'test_*.py' -v
"""

from __future__ import annotations

import copy
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
import scenario_whole as sw  # noqa: E402
from checks import Checks  # noqa: E402
from otlp_receiver import read_recording  # noqa: E402

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


class CheckAllTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.telemetry = read_recording(os.path.join(TESTDATA, "otlp_detailed.bin"))
        # The sample was recorded when database-query was an INTERNAL span; the render's is CLIENT
        # (re-record with capture_scenario_testdata.py to drop this).
        for span in cls.telemetry.find_spans(sw.DB_SPAN, "INTERNAL"):
            span.kind = "CLIENT"
        cls.stdout = procs.read_json_lines(os.path.join(TESTDATA, "server_stdout.jsonl"))

    def failures(self, t=None, n=3, stdout=None, stdout_error=None):
        c = Checks(out=io.StringIO())
        sw.check_all(c, t or self.telemetry, n, "my-service", "my-service-client",
                     self.stdout if stdout is None else stdout, stdout_error)
        return {f.split(":")[0] for f in c.failures}

    def test_sample_verdict(self):
        # the sample's third request failed on purpose and came from a second server whose
        # stdout is not in testdata: exactly these checks must fail, nothing else
        self.assertEqual(self.failures(), {
            "no span has status ERROR",
            "myservice.requests.total{error=false} == 3",
            "every request trace appears in the server's stdout",
        })

    def added(self, **kw):
        return self.failures(**kw) - self.failures()

    def test_wrong_count(self):
        got = self.added(n=4)
        self.assertIn("call spans (grpc.client.ProcessRequest) == 4", got)
        self.assertIn("server spans (grpc.server.ProcessRequest, SERVER) == 4", got)
        self.assertIn("inner spans (process-business-logic + database-query) == 8", got)
        self.assertIn("myservice.requests.total (last cumulative value per series, summed) == 4", got)

    def test_broken_parent(self):
        t = copy.deepcopy(self.telemetry)
        t.find_spans(sw.SERVER_SPAN)[0].parent_span_id = "00000000000000aa"
        self.assertEqual(self.added(t=t), {
            "every server span's parent is a client span of the same trace",
            "every client span has exactly one server span",
        })

    def test_internal_parent(self):
        # A server span under an INTERNAL span breaks the CLIENT->SERVER pair service graphs need.
        t = copy.deepcopy(self.telemetry)
        parent_id = t.find_spans(sw.SERVER_SPAN)[0].parent_span_id
        next(s for s in t.spans if s.span_id == parent_id).kind = "INTERNAL"
        self.assertIn("every server span's direct parent is a CLIENT span (service graphs pair them)",
                      self.added(t=t))

    def test_server_exported_nothing(self):
        t = copy.deepcopy(self.telemetry)
        t.spans = [s for s in t.spans if s.service_name != "my-service"]
        got = self.added(t=t)
        self.assertIn("server span traces == client span traces", got)
        self.assertIn("every span id in the server's stdout is a server-side span", got)

    def test_parent_in_other_trace(self):
        t = copy.deepcopy(self.telemetry)
        t.find_spans(sw.SERVER_SPAN)[0].trace_id = "f" * 32
        self.assertIn("every server span's parent is a client span of the same trace", self.added(t=t))

    def test_duplicate_span(self):
        t = copy.deepcopy(self.telemetry)
        t.spans.append(copy.deepcopy(t.find_spans(sw.DB_SPAN)[0]))
        self.assertEqual(self.added(t=t), {
            "inner spans (process-business-logic + database-query) == 6",
            "database-query spans == 3",
            "span ids are unique (no span received twice)",
        })

    def test_log_with_unknown_trace(self):
        t = copy.deepcopy(self.telemetry)
        r = next(r for r in t.logs if r.trace_id)
        r.trace_id = "e" * 32
        self.assertIn("every log record's trace_id is the trace of a received span", self.added(t=t))

    def test_missing_metric_export(self):
        t = copy.deepcopy(self.telemetry)
        t.data_points = [p for p in t.data_points if p.name != "myservice.requests.total"]
        got = self.added(t=t)
        self.assertIn("myservice.requests.total (last cumulative value per series, summed) == 3", got)
        self.assertIn("all server and client metrics were received", got)

    def test_stdout_problems(self):
        self.assertIn("every server stdout line is a JSON object",
                      self.added(stdout_error="line 3: invalid JSON"))
        extra = self.stdout + [{**self.stdout[1], "trace_id": "d" * 32}]
        self.assertIn("every trace id in the server's stdout is a request trace", self.added(stdout=extra))
        warn = self.stdout + [{**self.stdout[0], "level": 40, "msg": "OTLP export failed"}]
        self.assertEqual(self.added(stdout=warn), {"server logged no warnings or errors (export failures show up here)"})


if __name__ == "__main__":
    unittest.main()
