"""Unit tests of the OTLP receiver (otlp_receiver.py) and of rotel.py around it: real OTLP
protobuf requests, built with opentelemetry-proto, sent over gRPC and HTTP to a receiver on
free ports, and the records it decodes; the standalone CLI; and the recorded real sample
(testdata/otlp_detailed.bin: what rotel forwarded for real calls, capture_testdata.py).

    "$ROTEL_VENV/bin/python" -m unittest discover -s ci/e2e -p 'test_*.py' -v
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as ls  # noqa: E402
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2 as cm  # noqa: E402
from opentelemetry.proto.logs.v1 import logs_pb2 as lg  # noqa: E402
from opentelemetry.proto.metrics.v1 import metrics_pb2 as mt  # noqa: E402
from opentelemetry.proto.resource.v1 import resource_pb2 as rs  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2 as tr  # noqa: E402

import rotel  # noqa: E402
from otlp_receiver import Receiver, Telemetry, read_recording  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "testdata")
TRACE, ROOT, CHILD = bytes(range(1, 17)), bytes.fromhex("00f067aa0ba902b7"), bytes.fromhex("1111111111111111")
CUMULATIVE, DELTA = mt.AGGREGATION_TEMPORALITY_CUMULATIVE, mt.AGGREGATION_TEMPORALITY_DELTA


def kv(key, value) -> cm.KeyValue:
    return cm.KeyValue(key=key, value=any_value(value))


def any_value(v) -> cm.AnyValue:
    if isinstance(v, bool):
        return cm.AnyValue(bool_value=v)
    if isinstance(v, int):
        return cm.AnyValue(int_value=v)
    if isinstance(v, float):
        return cm.AnyValue(double_value=v)
    if isinstance(v, bytes):
        return cm.AnyValue(bytes_value=v)
    if isinstance(v, list):
        return cm.AnyValue(array_value=cm.ArrayValue(values=[any_value(x) for x in v]))
    if isinstance(v, dict):
        return cm.AnyValue(kvlist_value=cm.KeyValueList(values=[kv(k, x) for k, x in v.items()]))
    return cm.AnyValue(string_value=v)


def resource(service: str, **attrs) -> rs.Resource:
    return rs.Resource(attributes=[kv("service.name", service)] + [kv(k, v) for k, v in attrs.items()])


SCOPE = cm.InstrumentationScope(name="telemetry", version="1.2.3")


def traces_request() -> ts.ExportTraceServiceRequest:
    root = tr.Span(trace_id=TRACE, span_id=ROOT, name="grpc.server.ProcessRequest", kind=tr.Span.SPAN_KIND_SERVER,
                   trace_state="rojo=00f067aa0ba902b7", start_time_unix_nano=1_000, end_time_unix_nano=3_000,
                   status=tr.Status(code=tr.Status.STATUS_CODE_ERROR, message="UNAVAILABLE: line 1\nline 2 (x)"),
                   attributes=[kv("rpc.method", "myservice.v1.MyService/ProcessRequest"), kv("server.port", "15051"),
                               kv("n", 3), kv("ratio", 1.0), kv("ok", False), kv("list", ["a", 1]),
                               kv("map", {"k": "v"}), kv("raw", b"\x00\xff")],
                   events=[tr.Span.Event(name="exception", time_unix_nano=2_000, dropped_attributes_count=1,
                                         attributes=[kv("exception.type", "DatabaseError")])],
                   links=[tr.Span.Link(trace_id=bytes(16), span_id=CHILD, trace_state="a=b",
                                       attributes=[kv("link.kind", "follows")])])
    child = tr.Span(trace_id=TRACE, span_id=CHILD, parent_span_id=ROOT, name="database-query",
                    kind=tr.Span.SPAN_KIND_INTERNAL, status=tr.Status(code=tr.Status.STATUS_CODE_UNSET))
    return ts.ExportTraceServiceRequest(resource_spans=[tr.ResourceSpans(
        resource=resource("svc", **{"service.instance.id": "i-1"}),
        scope_spans=[tr.ScopeSpans(scope=SCOPE, spans=[root]), tr.ScopeSpans(spans=[child])])])


def metrics_request(start: int = 100, total: int = 2) -> ms.ExportMetricsServiceRequest:
    ndp = lambda value, t, **a: mt.NumberDataPoint(  # noqa: E731
        start_time_unix_nano=start, time_unix_nano=t, attributes=[kv(k, v) for k, v in a.items()],
        **({"as_int": value} if isinstance(value, int) else {"as_double": value}))
    metrics = [
        mt.Metric(name="requests.total", unit="{requests}", description="Total", sum=mt.Sum(
            is_monotonic=True, aggregation_temporality=CUMULATIVE,
            data_points=[ndp(total - 1, 200, error="false"), ndp(total, 300, error="false"), ndp(1, 300, error="true")])),
        mt.Metric(name="bytes.delta", sum=mt.Sum(aggregation_temporality=DELTA, data_points=[ndp(1.5, 200), ndp(2.5, 300)])),
        mt.Metric(name="queue.size", gauge=mt.Gauge(data_points=[mt.NumberDataPoint(
            time_unix_nano=300, as_double=0.5, exemplars=[mt.Exemplar(
                trace_id=TRACE, span_id=ROOT, time_unix_nano=250, as_int=7,
                filtered_attributes=[kv("user", "u1")])])])),
        mt.Metric(name="call.duration", unit="s", histogram=mt.Histogram(
            aggregation_temporality=CUMULATIVE, data_points=[mt.HistogramDataPoint(
                start_time_unix_nano=start, time_unix_nano=300, count=3, sum=0.3, min=0.05, max=0.2,
                explicit_bounds=[0.005, 0.1], bucket_counts=[0, 2, 1])])),
        mt.Metric(name="exp", exponential_histogram=mt.ExponentialHistogram(
            aggregation_temporality=DELTA, data_points=[mt.ExponentialHistogramDataPoint(
                count=4, sum=10.0, scale=1, positive=mt.ExponentialHistogramDataPoint.Buckets(bucket_counts=[1, 1, 2]))])),
        mt.Metric(name="latency.summary", summary=mt.Summary(data_points=[mt.SummaryDataPoint(
            count=10, sum=55.0, quantile_values=[mt.SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=5.0),
                                                 mt.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=9.9)])])),
    ]
    return ms.ExportMetricsServiceRequest(resource_metrics=[mt.ResourceMetrics(
        resource=resource("svc"), scope_metrics=[mt.ScopeMetrics(scope=cm.InstrumentationScope(name="meter"),
                                                                 metrics=metrics)])])


def logs_request() -> ls.ExportLogsServiceRequest:
    in_span = lg.LogRecord(observed_time_unix_nano=5, severity_number=lg.SEVERITY_NUMBER_INFO, severity_text="INFO",
                           event_name="event src/main.rs:12", body=any_value("Processing request: a\nb"),
                           attributes=[kv("request.id", "a")], trace_id=TRACE, span_id=ROOT, flags=1)
    outside = lg.LogRecord(severity_number=lg.SEVERITY_NUMBER_ERROR, severity_text="ERROR",
                           body=any_value({"msg": "Server stopped", "n": 2}))
    return ls.ExportLogsServiceRequest(resource_logs=[lg.ResourceLogs(
        resource=resource("svc"), scope_logs=[lg.ScopeLogs(scope=cm.InstrumentationScope(name="server::service"),
                                                           log_records=[in_span, outside])])])


def grpc_export(rx: Receiver, request, service: str, response_cls):
    with grpc.insecure_channel(f"127.0.0.1:{rx.grpc_port}") as ch:
        call = ch.unary_unary(f"/opentelemetry.proto.collector.{service}/Export",
                              request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
                              response_deserializer=response_cls.FromString)
        return call(request, timeout=10)


def send_all_grpc(rx: Receiver) -> None:
    grpc_export(rx, traces_request(), "trace.v1.TraceService", ts.ExportTraceServiceResponse)
    grpc_export(rx, metrics_request(), "metrics.v1.MetricsService", ms.ExportMetricsServiceResponse)
    grpc_export(rx, logs_request(), "logs.v1.LogsService", ls.ExportLogsServiceResponse)


def http_post(rx: Receiver, path: str, body: bytes, headers: dict | None = None) -> int:
    req = urllib.request.Request(f"{rx.http_endpoint}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


class ReceiverGrpcTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with Receiver() as rx:
            send_all_grpc(rx)
            cls.t, cls.counts = rx.telemetry(), rx.counts

    def test_counts(self):
        c = self.counts
        self.assertEqual((c.spans, c.log_records, c.metric_points, c.export_requests, c.decode_errors), (2, 2, 9, 3, 0))

    def test_span_fields(self):
        root, child = self.t.spans
        self.assertEqual((root.name, root.kind, root.service_name, root.service_instance_id),
                         ("grpc.server.ProcessRequest", "SERVER", "svc", "i-1"))
        self.assertEqual((root.scope_name, root.scope_version, child.scope_name), ("telemetry", "1.2.3", ""))
        self.assertEqual((root.trace_id, root.span_id, root.parent_span_id), (TRACE.hex(), ROOT.hex(), None))
        self.assertEqual((child.parent_span_id, child.kind, child.status_code), (ROOT.hex(), "INTERNAL", "UNSET"))
        self.assertEqual((root.status_code, root.status_message), ("ERROR", "UNAVAILABLE: line 1\nline 2 (x)"))
        self.assertEqual((root.trace_state, child.trace_state), ("rojo=00f067aa0ba902b7", ""))
        self.assertEqual((root.start_time_unix_nano, root.duration_s), (1_000, 2e-6))

    def test_attribute_values_keep_their_types(self):
        a = self.t.spans[0].attributes
        self.assertEqual(a["server.port"], "15051")
        self.assertEqual((a["n"], a["ratio"], a["ok"]), (3, 1.0, False))
        self.assertIsInstance(a["ratio"], float)
        self.assertEqual((a["list"], a["map"], a["raw"]), (["a", 1], {"k": "v"}, b"\x00\xff"))

    def test_events_and_links(self):
        (ev,), (link,) = self.t.spans[0].events, self.t.spans[0].links
        self.assertEqual((ev.name, ev.time_unix_nano, ev.dropped_attributes_count, ev.attributes),
                         ("exception", 2_000, 1, {"exception.type": "DatabaseError"}))
        self.assertEqual((link.trace_id, link.span_id, link.trace_state, link.attributes),
                         ("0" * 32, CHILD.hex(), "a=b", {"link.kind": "follows"}))

    def test_metric_points(self):
        t = self.t
        total = t.find_points("requests.total")[0]
        self.assertEqual((total.type, total.unit, total.description, total.is_monotonic, total.temporality, total.value),
                         ("Sum", "{requests}", "Total", True, "CUMULATIVE", 1))
        self.assertEqual((total.scope_name, total.service_name), ("meter", "svc"))
        g = t.find_points("queue.size")[0]
        self.assertEqual((g.type, g.temporality, g.is_monotonic, g.value), ("Gauge", None, None, 0.5))
        ex = g.exemplars[0]
        self.assertEqual((ex.trace_id, ex.span_id, ex.time_unix_nano, ex.value, ex.filtered_attributes),
                         (TRACE.hex(), ROOT.hex(), 250, 7, {"user": "u1"}))
        h = t.find_points("call.duration")[0]
        self.assertEqual((h.type, h.count, h.sum, h.min, h.max, h.value), ("Histogram", 3, 0.3, 0.05, 0.2, None))
        self.assertEqual((h.explicit_bounds, h.bucket_counts), ([0.005, 0.1], [0, 2, 1]))
        e = t.find_points("exp")[0]
        self.assertEqual((e.type, e.count, e.bucket_counts, e.temporality, e.min), ("ExponentialHistogram", 4, [1, 1, 2], "DELTA", None))
        s = t.find_points("latency.summary")[0]
        self.assertEqual((s.type, s.count, s.sum, s.quantiles), ("Summary", 10, 55.0, [(0.5, 5.0), (0.99, 9.9)]))

    def test_metric_total(self):
        t = self.t
        self.assertEqual(t.metric_total("requests.total"), 3)  # last cumulative value of each series
        self.assertEqual(t.metric_total("requests.total", error="false"), 2)
        self.assertEqual(t.metric_total("requests.total", service="nope"), 0)
        self.assertEqual(t.metric_total("bytes.delta"), 4.0)  # delta points add up
        self.assertEqual(t.metric_total("call.duration"), 3)  # histogram: count
        self.assertEqual(len(t.latest_points("requests.total")), 2)
        self.assertEqual(t.metric_names(), {"requests.total", "bytes.delta", "queue.size", "call.duration", "exp",
                                            "latency.summary"})

    def test_log_records(self):
        r, outside = self.t.logs
        self.assertEqual((r.body, r.severity_text, r.severity_number, r.flags), ("Processing request: a\nb", "INFO", 9, 1))
        self.assertEqual((r.trace_id, r.span_id, r.event_name, r.scope_name), (TRACE.hex(), ROOT.hex(),
                                                                             "event src/main.rs:12", "server::service"))
        self.assertEqual((r.observed_time_unix_nano, r.time_unix_nano, r.attributes), (5, 0, {"request.id": "a"}))
        self.assertEqual((outside.trace_id, outside.span_id, outside.flags, outside.severity_number),
                         (None, None, 0, 17))
        self.assertEqual(outside.body, {"msg": "Server stopped", "n": 2})


class ReceiverTest(unittest.TestCase):
    def test_telemetry_grows_incrementally(self):
        with Receiver(http_port=None) as rx:
            t = rx.telemetry()
            grpc_export(rx, traces_request(), "trace.v1.TraceService", ts.ExportTraceServiceResponse)
            self.assertIs(rx.telemetry(), t)
            self.assertEqual(len(t.spans), 2)
            grpc_export(rx, traces_request(), "trace.v1.TraceService", ts.ExportTraceServiceResponse)
            self.assertEqual(len(rx.telemetry().spans), 4)

    def test_a_restarted_series_counts_again(self):
        t = Telemetry()
        with Receiver() as rx:
            grpc_export(rx, metrics_request(start=100, total=2), "metrics.v1.MetricsService", ms.ExportMetricsServiceResponse)
            grpc_export(rx, metrics_request(start=900, total=5), "metrics.v1.MetricsService", ms.ExportMetricsServiceResponse)
            t = rx.telemetry()
        self.assertEqual(t.metric_total("requests.total", error="false"), 7)

    def test_http_protobuf_plain_and_gzip(self):
        with Receiver() as rx:
            self.assertEqual(http_post(rx, "/v1/traces", traces_request().SerializeToString()), 200)
            self.assertEqual(http_post(rx, "/v1/logs", gzip.compress(logs_request().SerializeToString()),
                                       {"Content-Encoding": "gzip"}), 200)
            self.assertEqual(http_post(rx, "/v1/metrics", metrics_request().SerializeToString()), 200)
            self.assertEqual(http_post(rx, "/v1/nothing", b""), 404)
            self.assertEqual(http_post(rx, "/v1/traces", b"{}", {"Content-Type": "application/json"}), 415)
            t = rx.telemetry()
            self.assertEqual((len(t.spans), len(t.logs), len(t.data_points)), (2, 2, 9))
            self.assertEqual(t.unparsed, [])

    def test_garbage_is_refused_and_listed(self):
        with Receiver() as rx:
            self.assertEqual(http_post(rx, "/v1/traces", b"\xff\xff\xff"), 400)
            with self.assertRaises(grpc.RpcError) as e:
                grpc_export(rx, b"\x0a\xff", "logs.v1.LogsService", ls.ExportLogsServiceResponse)
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            t = rx.telemetry()
            self.assertEqual(len(t.unparsed), 2)
            self.assertEqual((rx.counts.decode_errors, rx.counts.export_requests), (2, 0))

    def test_count_only_keeps_no_records(self):
        with Receiver(count_only=True, http_port=None) as rx:
            send_all_grpc(rx)
            self.assertEqual(rx.counts.as_dict(), {"spans": 2, "log_records": 2, "metric_points": 9,
                                                   "export_requests": 3, "decode_errors": 0})
            with self.assertRaises(RuntimeError):
                rx.telemetry()

    def test_recording_replays_to_the_same_records(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "rec.otlp")
            with Receiver(record=path) as rx:
                send_all_grpc(rx)
                t = rx.telemetry()
            self.assertEqual(read_recording(path), t)

    def test_wait_for_times_out_with_summary(self):
        with Receiver(http_port=None) as rx:
            with self.assertRaises(TimeoutError) as e:
                rx.wait_for(lambda t: len(t.spans) > 0, timeout=0.3, interval=0.05)
            self.assertIn("'spans': 0", str(e.exception))

    def test_otel_env(self):
        rx = Receiver(grpc_port=14317, http_port=14318)
        self.assertEqual(rx.otel_env("grpc")["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:14317")
        self.assertEqual(rx.otel_env("http")["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf")
        with self.assertRaises(ValueError):
            Receiver(http_port=None).otel_env("http/protobuf")


class CliTest(unittest.TestCase):
    def test_ready_line_then_totals_on_sigterm(self):
        with tempfile.TemporaryDirectory() as d:
            ready_file = os.path.join(d, "ready")
            p = subprocess.Popen([sys.executable, os.path.join(HERE, "otlp_receiver.py"), "--grpc", "127.0.0.1:0",
                                  "--http", "127.0.0.1:0", "--count-only", "--ready-file", ready_file],
                                 stdout=subprocess.PIPE, text=True)
            try:
                ready = p.stdout.readline().split()
                self.assertEqual(ready[0], "ready")
                addr = dict(x.split("=") for x in ready[1:])
                with open(ready_file) as f:
                    self.assertEqual(f.read().split(), ready)
                rx = Receiver(grpc_port=int(addr["grpc"].rsplit(":")[1]), http_port=int(addr["http"].rsplit(":")[1]))
                send_all_grpc(rx)
                self.assertEqual(http_post(rx, "/v1/traces", traces_request().SerializeToString()), 200)
                p.send_signal(signal.SIGTERM)
                out, _ = p.communicate(timeout=20)
            finally:
                p.kill()
        self.assertEqual(p.returncode, 0)
        self.assertEqual(json.loads(out), {"spans": 4, "log_records": 2, "metric_points": 9, "export_requests": 4,
                                           "decode_errors": 0})


class RotelWrapperTest(unittest.TestCase):
    def test_command_exports_to_its_receiver(self):
        with tempfile.TemporaryDirectory() as d:
            r = rotel.Rotel(d, grpc_port=14317, http_port=14318, agent="/x",
                            receiver=Receiver(grpc_port=24317, http_port=None))
            cmd = r.command()
            self.assertEqual(cmd[:2], ["/x", "start"])
            arg = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
            self.assertEqual((arg("--otlp-grpc-endpoint"), arg("--otlp-http-endpoint")), ("127.0.0.1:14317", "127.0.0.1:14318"))
            self.assertEqual((arg("--exporter"), arg("--otlp-exporter-endpoint")), ("otlp", "http://127.0.0.1:24317"))
            self.assertEqual(r.otel_env("http")["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:14318")
            self.assertEqual(r.otel_env("grpc")["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:14317")

    def test_collector_lines_complete_and_uncoloured(self):
        with tempfile.TemporaryDirectory() as d:
            r = rotel.Rotel(d, grpc_port=1, http_port=2, agent="/x")
            with open(r.output_path, "wb") as f:
                f.write(b"\x1b[2m2026-01-01T00:00:00Z\x1b[0m \x1b[32m INFO\x1b[0m Starting Rotel.\n\n"
                        b"2026-01-01T00:00:01Z  WARN half a li")
            self.assertEqual(r.collector_lines(), ["2026-01-01T00:00:00Z  INFO Starting Rotel."])


class RealSampleTest(unittest.TestCase):
    """testdata/otlp_detailed.bin: what rotel forwarded to the receiver while a server (gRPC
    OTLP) answered sample-1 and sample-2 with one periodic metric export in between and was
    stopped; rotel was restarted; a server with FAILURE_RATE=1 (http/protobuf OTLP) failed
    sample-fail and was stopped."""

    @classmethod
    def setUpClass(cls):
        cls.t = read_recording(os.path.join(TESTDATA, "otlp_detailed.bin"))

    def test_span_kinds_names_and_services(self):
        t = self.t
        self.assertEqual(len(t.spans), 15)
        for name, kind, service in (
            ("grpc.client.ProcessRequest", "CLIENT", "my-service-client"),
            ("cli.process_request", "INTERNAL", "my-service-client"),
            ("grpc.server.ProcessRequest", "SERVER", "my-service"),
            ("process-business-logic", "INTERNAL", "my-service"),
            ("database-query", "INTERNAL", "my-service"),
        ):
            spans = t.find_spans(name)
            self.assertEqual(len(spans), 3, name)
            self.assertEqual({s.kind for s in spans}, {kind}, name)
            self.assertEqual({s.service_name for s in spans}, {service}, name)
            self.assertEqual({s.scope_name for s in spans}, {"telemetry"}, name)
        for s in t.spans:
            self.assertRegex(s.trace_id, r"^[0-9a-f]{32}$")
            self.assertRegex(s.span_id, r"^[0-9a-f]{16}$")
            self.assertIn("service.instance.id", s.resource)
            self.assertEqual(s.resource["telemetry.sdk.language"], "rust")

    def test_parent_chain_per_request(self):
        t = self.t
        by_id = {s.span_id: s for s in t.spans}
        for rid in ("sample-1", "sample-2", "sample-fail"):
            client = [s for s in t.find_spans("grpc.client.ProcessRequest") if s.attributes["request.id"] == rid]
            server = [s for s in t.find_spans("grpc.server.ProcessRequest") if s.attributes["request.id"] == rid]
            self.assertEqual((len(client), len(server)), (1, 1), rid)
            c, srv = client[0], server[0]
            self.assertEqual((srv.parent_span_id, srv.trace_id), (c.span_id, c.trace_id))
            root = by_id[c.parent_span_id]
            self.assertEqual((root.name, root.parent_span_id), ("cli.process_request", None))
            logic = [s for s in t.spans if s.parent_span_id == srv.span_id]
            self.assertEqual([s.name for s in logic], ["process-business-logic"])
            db = [s for s in t.spans if s.parent_span_id == logic[0].span_id]
            self.assertEqual([s.name for s in db], ["database-query"])
            self.assertEqual({s.trace_id for s in logic + db}, {c.trace_id})

    def test_attributes_and_error_events(self):
        t = self.t
        srv = t.find_spans("grpc.server.ProcessRequest")[0]
        self.assertEqual((srv.attributes["rpc.system.name"], srv.attributes["rpc.status_code"]), ("grpc", "OK"))
        self.assertIsInstance(srv.attributes["network.peer.port"], int)
        failed = [s for s in t.spans if s.attributes.get("request.id") == "sample-fail"]
        status = {s.name: (s.status_code, s.status_message) for s in failed}
        self.assertEqual(status["grpc.server.ProcessRequest"][0], "ERROR")
        self.assertTrue(status["grpc.server.ProcessRequest"][1].startswith("UNAVAILABLE: "))
        logic = [s for s in failed if s.name == "process-business-logic"][0]
        exc = logic.events[0]
        self.assertEqual((exc.name, exc.attributes["exception.type"]), ("exception", "DatabaseError"))
        self.assertIn("injected failure", exc.attributes["exception.message"])
        self.assertTrue(logic.events[1].name.startswith("Business logic failed: "))
        ok_spans = [s for s in t.spans if s.trace_id not in {f.trace_id for f in failed}]
        self.assertTrue(all(not s.events and s.status_code == "UNSET" for s in ok_spans))

    def test_metrics(self):
        t = self.t
        total = t.find_points("myservice.requests.total")[0]
        self.assertEqual((total.type, total.unit, total.is_monotonic, total.temporality),
                         ("Sum", "{requests}", True, "CUMULATIVE"))
        hist = t.find_points("rpc.server.call.duration")[0]
        self.assertEqual((hist.type, hist.unit, hist.temporality, hist.value), ("Histogram", "s", "CUMULATIVE", None))
        self.assertEqual(sum(hist.bucket_counts), hist.count)
        # first server: 1 (periodic export), then 2 (final export); failing server: 1
        self.assertEqual(sorted(p.value for p in t.find_points("myservice.requests.total")), [1, 1, 2])
        self.assertEqual(t.metric_total("myservice.requests.total"), 3)
        self.assertEqual(t.metric_total("myservice.requests.total", error="true"), 1)
        self.assertEqual(t.metric_total("myservice.client.calls.total", "my-service-client"), 3)
        self.assertEqual(t.metric_names(), {
            "myservice.requests.total", "myservice.request.duration", "myservice.requests.active",
            "rpc.server.call.duration", "myservice.client.calls.total", "myservice.client.call.duration",
            "rpc.client.call.duration"})

    def test_log_records(self):
        t = self.t
        spans = {s.span_id: s for s in t.spans}
        in_span = [r for r in t.logs if r.trace_id]
        self.assertTrue(in_span)
        self.assertTrue(all(spans[r.span_id].trace_id == r.trace_id for r in in_span))
        outside = [r for r in t.logs if not r.trace_id]
        self.assertIn("Server stopped", {r.body for r in outside})
        self.assertTrue(all(r.span_id is None and r.flags == 0 for r in outside))
        processing = [r for r in t.find_logs("my-service") if str(r.body).startswith("Processing request: ")]
        self.assertEqual(len(processing), 3)
        r = processing[0]
        self.assertEqual((r.severity_text, r.severity_number, r.flags, r.scope_name), ("INFO", 9, 1, "my_service_server::service"))
        self.assertEqual(spans[r.span_id].name, "grpc.server.ProcessRequest")
        self.assertEqual({r.severity_number for r in t.logs if r.severity_text == "ERROR"}, {17})


if __name__ == "__main__":
    unittest.main()
