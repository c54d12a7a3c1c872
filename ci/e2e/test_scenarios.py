"""Unit tests of the parsing and decision logic of scenarios 2-6 (common.py, h2.py,
mutations.py, the TraceState field of decoded spans, and the verdicts of
scenario_bad_input.check_mutations), on real samples in testdata/ (capture_scenario_testdata.py)
and on synthetic records for the cases the samples do not contain.

    $PY -m unittest discover -s ci/e2e -p 'test_*.py' -v
"""

from __future__ import annotations

import io
import json
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import h2  # noqa: E402
import mutations  # noqa: E402
import procs  # noqa: E402
from checks import Checks  # noqa: E402
from otlp_receiver import Span, Telemetry, read_recording  # noqa: E402

TESTDATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "testdata")


def sample(name: str, mode: str = "r"):
    with open(os.path.join(TESTDATA, name), mode) as f:
        return f.read()


class TraceStateTest(unittest.TestCase):
    def test_tracestate_is_a_span_field(self):
        t = read_recording(os.path.join(TESTDATA, "otlp_tracestate.bin"))
        self.assertEqual(t.unparsed, [])
        server = [s for s in t.find_spans("grpc.server.ProcessRequest") if s.attributes.get("request.id") == "capture-ts"]
        self.assertEqual(len(server), 1)
        self.assertEqual(server[0].trace_state, "rojo=00f067aa0ba902b7")
        self.assertEqual(server[0].parent_span_id, "00f067aa0ba902b7")
        in_trace = [s for s in t.spans if s.trace_id == server[0].trace_id]
        self.assertEqual(len(in_trace), 3)
        self.assertEqual({s.trace_state for s in in_trace}, {"rojo=00f067aa0ba902b7"})
        self.assertEqual({s.trace_state for s in t.spans if s.trace_id != server[0].trace_id}, {""})


class H2Test(unittest.TestCase):
    def test_h2load_reports(self):
        ok = h2.parse_h2load(sample("h2load_ok.txt"))
        self.assertTrue(ok.parsed and ok.all_2xx)
        self.assertEqual((ok.total, ok.succeeded, ok.status_2xx), (1, 1, 1))
        refused = h2.parse_h2load(sample("h2load_431.txt"))
        self.assertTrue(refused.parsed)
        self.assertFalse(refused.all_2xx)
        self.assertEqual((refused.failed, refused.status_4xx), (1, 1))
        self.assertFalse(h2.parse_h2load("connect: Connection refused").parsed)

    def test_nghttp_trailers(self):
        r = h2.parse_nghttp_verbose(sample("nghttp_internal.txt"))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.grpc_status, 13)
        self.assertEqual(r.code, "INTERNAL")
        self.assertIn("data is not UTF-8 encoded", r.grpc_message)  # percent-decoded
        self.assertIn(("content-type", "application/grpc"), r.headers)
        self.assertIsNone(h2.parse_nghttp_verbose("[  0.001] recv (stream_id=0) x: y").status)

    def test_health_body(self):
        frames = h2.parse_frames(sample("nghttp_health.txt", "rb"))
        self.assertEqual(frames, [(0, b"\x08\x01")])
        self.assertEqual(h2.health_status(frames[0][1]), "SERVING")
        self.assertEqual(h2.health_status(b""), "UNKNOWN")
        self.assertEqual(h2.health_status(b"\x08\x02"), "NOT_SERVING")

    def test_protobuf_and_framing(self):
        self.assertEqual(h2.my_request(""), b"")  # proto3: the default is not encoded
        self.assertEqual(h2.my_request("hi"), b"\x0a\x02hi")
        self.assertEqual(h2.my_request(b"\xff"), b"\x0a\x01\xff")
        big = h2.my_request("x" * 300)
        self.assertEqual(big[:3], b"\x0a\xac\x02")
        self.assertEqual(h2.read_varint(big, 1), (300, 3))
        for n in (0, 1, 127, 128, 16384, 2**32):
            self.assertEqual(h2.read_varint(h2.varint(n)), (n, len(h2.varint(n))))
        self.assertEqual(h2.grpc_frame(b"ab"), b"\x00\x00\x00\x00\x02ab")
        self.assertEqual(h2.grpc_frame(b"ab", compressed=True)[:1], b"\x01")
        self.assertEqual(h2.grpc_frame(b"ab", declared_length=100), b"\x00\x00\x00\x00\x64ab")
        self.assertEqual(h2.parse_frames(h2.grpc_frame(b"a") + h2.grpc_frame(b"bc") + b"\x00\x00"),
                         [(0, b"a"), (0, b"bc")])


class MutationsTest(unittest.TestCase):
    def test_deterministic(self):
        a, b = mutations.generate(7), mutations.generate(7)
        self.assertEqual(a, b)
        self.assertNotEqual([m.headers for m in a], [m.headers for m in mutations.generate(8)])
        self.assertGreaterEqual(len(a), 250)

    def test_header_legal_and_sized(self):
        for m in mutations.generate():
            for name, value in m.headers:
                self.assertTrue(value and value == value.strip(" \t"), m.name)
                self.assertFalse(set(value) & {"\r", "\n", "\0"}, m.name)
                self.assertTrue(all(ord(ch) >= 0x20 or ch == "\t" for ch in value), m.name)
            if not m.oversize:
                self.assertLess(m.header_bytes(), mutations.HEADER_LIST_LIMIT, m.name)
        self.assertEqual([m.name for m in mutations.generate() if m.oversize], ["oversize-baggage"])

    def test_covers_every_kind(self):
        names = [m.name for m in mutations.generate()]
        for kind in ("traceparent/truncated-", "-too-long", "-too-short", "-uppercase", "-nonhex-", "huge",
                     "traceparent/random-", "tracestate/", "baggage/", "combo-", "obs-text"):
            self.assertTrue(any(kind in n for n in names), kind)

    def test_model_matches_the_servers_rules(self):
        tp = mutations.VALID_TP
        e = mutations.expected_parent(tp)
        self.assertEqual((e.parent, e.sampled, e.trace_id, e.parent_id),
                         (True, True, mutations.VALID_TRACE_ID, mutations.VALID_PARENT_ID))
        self.assertEqual(mutations.expected_parent(tp[:-2] + "00").sampled, False)
        self.assertTrue(mutations.expected_parent("01" + tp[2:] + "-extra").parent)  # future versions may add fields
        self.assertTrue(mutations.expected_parent("01" + tp[2:] + "-").parent)
        # the cases of server.rs only_well_formed_traceparents_pass, plus zero ids and non-ASCII
        for bad in ("", "garbage", "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902-01",
                    "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", tp.upper(), "ff" + tp[2:],
                    tp + "-extra", tp + "-", tp[:-2] + "1", f"00-{'0' * 32}-{mutations.VALID_PARENT_ID}-01",
                    f"00-{mutations.VALID_TRACE_ID}-{'0' * 16}-01", tp[:10] + "\u00e9" + tp[11:]):
            self.assertFalse(mutations.expected_parent(bad).parent, bad)

    def test_random_values_are_stripped(self):
        rng = random.Random(1)
        for _ in range(200):
            v = mutations._random_value(rng, rng.randint(1, 30))
            self.assertTrue(v and v == v.strip(" \t"))


def records():
    return [json.loads(line) for line in sample("server_stdout_collector_down.jsonl").splitlines()]


class ServerStdoutTest(unittest.TestCase):
    def test_sdk_problems_of_a_dead_collector(self):
        sdk = common.sdk_problems(records())
        targets = {r["target"] for r in sdk}
        self.assertEqual(targets, {"opentelemetry_sdk", "opentelemetry-otlp"})  # not telemetry::shutdown
        self.assertEqual(len({common.callsite(r) for r in sdk}), len(sdk))  # each callsite once
        self.assertEqual(common.repeats_within(sdk, 60), [])

    def test_repeats_are_found(self):
        sdk = common.sdk_problems(records())
        again = dict(sdk[0], time=sdk[0]["time"][:17] + "59.999Z")  # same callsite, same minute
        self.assertEqual(len(common.repeats_within(sdk[:1] + [again], 60)), 1)
        later = dict(sdk[0], time="2099-01-01T00:00:00Z")
        self.assertEqual(common.repeats_within(sdk[:1] + [later], 60), [])

    def test_dropped_counts(self):
        d = common.dropped_counts(records())
        self.assertGreater(d["spans"], 0)
        self.assertGreater(d["logs"], 0)
        self.assertEqual((d["spans_dropping_started"], d["logs_dropping_started"]), (1, 1))
        self.assertEqual(common.dropped_counts([]), {})

    def test_processed_ids_keep_odd_ids_whole(self):
        rs = [{"msg": "[GRPC.SERVER - EVENT] Processing request: a\nb \"c\""},
              {"msg": "[GRPC.SERVER - EVENT] Processing request: "},
              {"msg": "Executing database query"},
              {"msg": "[GRPC.SERVER - EVENT] Processing request: pre-1"}]
        self.assertEqual(common.processed_ids(rs), ['a\nb "c"', "", "pre-1"])
        self.assertEqual(common.processed_ids(rs, "pre-"), ["pre-1"])
        self.assertEqual(common.processed_ids(records(), "load-"), ["load-9fe054a2-8", "load-9fe054a2-9"])

    def test_bunyan_time(self):
        self.assertAlmostEqual(common.bunyan_time({"time": "1970-01-01T00:01:00.5Z"}), 60.5)
        self.assertAlmostEqual(common.bunyan_time({"time": "2026-11-24T00:05:49.778649003Z"}) % 60, 49.778649003, 6)
        self.assertIsNone(common.bunyan_time({"time": "yesterday"}))

    def test_read_records_skips_partial_lines(self):
        import tempfile
        from pathlib import Path

        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            f.write('{"a":1}\nnot json\n[1]\n{"b":2}\n{"c":')
        try:
            self.assertEqual(common.read_records(Path(f.name)), [{"a": 1}, {"b": 2}])
        finally:
            os.unlink(f.name)

    def test_panics_and_misc(self):
        self.assertEqual(common.panics("ok\nthread 'x' panicked at src/a.rs:1", ""), ["thread 'x' panicked at src/a.rs:1"])
        self.assertEqual(common.kv_list(["A=1", "B=x=y", "C="]), {"A": "1", "B": "x=y", "C": ""})
        with self.assertRaises(ValueError):
            common.kv_list(["nokey"])
        s = procs.LoadSummary(10, 9, {"UNAVAILABLE": 1}, 1.0, 10.0, {}, {}, 1, 1.0)
        self.assertEqual(len(common.load_problems(s, 10)), 3)
        good = procs.LoadSummary(10, 10, {}, 1.0, 10.0, {}, {}, 0, 1.0)
        self.assertEqual(common.load_problems(good, 10), [])
        self.assertEqual(common.load_problems(good, 11), ["10 calls made, 11 asked"])


class CheckMutationsTest(unittest.TestCase):
    """scenario_bad_input.check_mutations on synthetic results: a correct server passes, each
    kind of misbehaviour adds the failure that names it."""

    def setUp(self):
        import scenario_bad_input as sbi

        self.sbi = sbi
        self.muts = [m for m in mutations.generate() if m.name in (
            "traceparent/valid", "traceparent/valid-unsampled", "traceparent/truncated-10",
            "tracestate/equals", "oversize-baggage")]

    def run_check(self, spans, results=None):
        ok = h2.parse_h2load(sample("h2load_ok.txt"))
        refused = h2.parse_h2load(sample("h2load_431.txt"))
        sent = [(f"hdr-{i:03d}", m, refused if m.oversize else ok) for i, m in enumerate(self.muts)]
        if results:
            sent = [(i, m, results.get(i, r)) for i, m, r in sent]
        c = Checks(out=io.StringIO())
        self.sbi.check_mutations(c, {}, Telemetry(spans=spans), sent)
        return {f.split(":")[0] for f in c.failures}

    def good_spans(self):
        spans = []
        for i, m in enumerate(self.muts):
            if m.oversize or (m.expect and not m.expect.sampled):
                continue
            e = m.expect
            spans.append(Span(resource={"service.name": self.sbi.SERVICE}, name=self.sbi.SERVER_SPAN, kind="SERVER",
                              trace_id=e.trace_id if e.parent else "ab" * 16, span_id=f"{i:016x}",
                              parent_span_id=e.parent_id if e.parent else None,
                              attributes={"request.id": f"hdr-{i:03d}", "rpc.status_code": "OK"}))
        return spans

    def test_correct_server_passes(self):
        self.assertEqual(self.run_check(self.good_spans()), set())

    def test_malformed_traceparent_continued(self):
        spans = self.good_spans()
        bad = next(s for s in spans if s.attributes["request.id"] == "hdr-002")  # truncated-10
        bad.parent_span_id = "00f067aa0ba902b7"
        self.assertEqual(self.run_check(spans),
                         {"well-formed traceparents are continued, every other one starts a new trace"})

    def test_missing_span_and_bad_status(self):
        spans = self.good_spans()
        spans[0].attributes["rpc.status_code"] = "INTERNAL"
        del spans[1]
        self.assertEqual(self.run_check(spans), {"every sampled mutated request has exactly one server span",
                                                 "their rpc.status_code is OK"})

    def test_unsampled_exported_and_http_failure(self):
        spans = self.good_spans()
        spans.append(Span(resource={"service.name": self.sbi.SERVICE}, name=self.sbi.SERVER_SPAN, kind="SERVER",
                          trace_id=mutations.VALID_TRACE_ID, span_id="f" * 16, parent_span_id=mutations.VALID_PARENT_ID,
                          attributes={"request.id": "hdr-001", "rpc.status_code": "OK"}))
        failed = h2.parse_h2load(sample("h2load_431.txt"))
        got = self.run_check(spans, {"hdr-000": failed})
        self.assertIn("no span for the 1 well-formed unsampled traceparents (parent-based sampling)", got)
        self.assertIn("every one of 4 mutated-header requests got HTTP 2xx (h2load)", got)


if __name__ == "__main__":
    unittest.main()
