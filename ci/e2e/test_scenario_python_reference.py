"""The assertions of scenario_python_reference.py on traces shaped as the two directions make them, whole and
with deliberate breakage: each breakage must add exactly the failures that describe it.

    $PY -m unittest discover -s ci/e2e -p 'test_*.py' -v
"""

from __future__ import annotations

import copy
import io
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import scenario_python_reference as ss  # noqa: E402
from checks import Checks  # noqa: E402
from otlp_receiver import Span, Telemetry  # noqa: E402

TO_REFERENCE, FROM_REFERENCE = "a" * 32, "b" * 32


def span(service: str, name: str, kind: str, trace_id: str, span_id: str, parent: str = "", **attributes) -> Span:
    return Span(resource={"service.name": service}, name=name, kind=kind, trace_id=trace_id, span_id=span_id,
                parent_span_id=parent, attributes=attributes)


def whole() -> Telemetry:
    """Render client → the reference service (call, attempt, its server span and inner spans), then the reference service's
    client → render server (and its inner spans)."""
    return Telemetry(spans=[
        span(ss.CLIENT_SERVICE, ss.CLIENT_SPAN, "INTERNAL", TO_REFERENCE, "1000000000000001"),
        span(ss.CLIENT_SERVICE, ss.ATTEMPT_SPAN, "CLIENT", TO_REFERENCE, "1000000000000002", "1000000000000001",
             **{"network.peer.address": "127.0.0.1", "network.peer.port": 50051}),
        span(ss.REFERENCE_SERVICE, ss.SERVER_SPAN, "SERVER", TO_REFERENCE, "1000000000000003", "1000000000000002"),
        span(ss.REFERENCE_SERVICE, "process-business-logic", "INTERNAL", TO_REFERENCE, "1000000000000004", "1000000000000003"),
        span(ss.REFERENCE_SERVICE, ss.CLIENT_SPAN, "CLIENT", FROM_REFERENCE, "2000000000000001"),
        span(ss.SERVICE, ss.SERVER_SPAN, "SERVER", FROM_REFERENCE, "2000000000000002", "2000000000000001"),
        span(ss.SERVICE, "process-business-logic", "INTERNAL", FROM_REFERENCE, "2000000000000003", "2000000000000002"),
    ])


class Failed(Checks):
    """Checks that keep what each failed check says, without its detail."""

    def __init__(self) -> None:
        super().__init__(out=io.StringIO())
        self.what: set[str] = set()

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if not ok:
            self.what.add(what)
        return super().check(ok, what, detail)


def failures(t: Telemetry) -> set[str]:
    c = Failed()
    ss.check_all(c, t, TO_REFERENCE, FROM_REFERENCE)
    return c.what


def find(t: Telemetry, trace_id: str, kind: str) -> Span:
    return next(s for s in t.spans if s.trace_id == trace_id and s.kind == kind)


class CheckAllTest(unittest.TestCase):
    def test_whole_traces_pass(self):
        self.assertEqual(failures(whole()), set())

    def test_reference_server_under_an_internal_span(self):
        # The render's client made its attempt an INTERNAL span: the reference service's server span's parent
        # is no CLIENT span, the pair service graphs need.
        t = whole()
        find(t, TO_REFERENCE, "CLIENT").kind = "INTERNAL"
        self.assertEqual(failures(t), {
            "render -> reference: the server span's direct parent is a CLIENT span (service graphs pair them)"})

    def test_render_server_under_an_internal_span(self):
        t = whole()
        find(t, FROM_REFERENCE, "CLIENT").kind = "INTERNAL"
        self.assertEqual(failures(t), {
            "reference -> render: the server span's direct parent is a CLIENT span (service graphs pair them)"})

    def test_server_span_under_the_call_not_the_attempt(self):
        # Injecting the call's context rather than the attempt's: the parent is the INTERNAL call.
        t = whole()
        find(t, TO_REFERENCE, "SERVER").parent_span_id = "1000000000000001"
        got = failures(t)
        self.assertIn("render -> reference: the server span's direct parent is a CLIENT span (service graphs pair them)", got)
        self.assertIn(f"render -> reference: the server span's parent is {ss.ATTEMPT_SPAN} of {ss.CLIENT_SERVICE}, same trace",
                      got)

    def test_parent_missing(self):
        t = whole()
        t.spans = [s for s in t.spans if not (s.trace_id == FROM_REFERENCE and s.kind == "CLIENT")]
        self.assertEqual(failures(t), {
            f"reference -> render: the server span's parent is {ss.CLIENT_SPAN} of {ss.REFERENCE_SERVICE}, same trace",
            "reference -> render: the server span's direct parent is a CLIENT span (service graphs pair them)"})

    def test_server_span_missing(self):
        t = whole()
        t.spans = [s for s in t.spans if not (s.trace_id == FROM_REFERENCE and s.kind == "SERVER")]
        self.assertEqual(failures(t), {f"reference -> render: one SERVER span of {ss.SERVICE} in the call's trace == 1"})

    def test_attempt_without_peer(self):
        t = whole()
        del find(t, TO_REFERENCE, "CLIENT").attributes["network.peer.address"]
        self.assertEqual(failures(t), {
            "render -> reference: the attempt span names the replica it reached (network.peer.address)"})

    def test_breakage_is_independent_of_order(self):
        t = whole()
        t.spans.reverse()
        self.assertEqual(failures(copy.deepcopy(t)), set())


if __name__ == "__main__":
    unittest.main()
