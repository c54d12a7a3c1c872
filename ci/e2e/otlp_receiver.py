#!/usr/bin/env python3
"""A small OTLP receiver: decodes ExportTraceServiceRequest / ExportMetricsServiceRequest /
ExportLogsServiceRequest (gRPC, and HTTP with protobuf bodies) with the ``opentelemetry-proto``
package and keeps what the end-to-end scenarios assert on, as :class:`Span`,
:class:`DataPoint` and :class:`LogRecord` records in a :class:`Telemetry`.

In the scenarios it runs inside the scenario's own process, behind rotel (``rotel.Rotel``
starts one and points rotel's OTLP exporter at it) or alone (``count_only``: it only sums the
spans, log records and metric points of each request, which keeps up at benchmark load).

Standalone, for other scripts (a benchmark, say)::

    python ci/e2e/otlp_receiver.py --grpc 127.0.0.1:4317 [--http 127.0.0.1:4318] [--count-only]
                                   [--ready-file PATH] [--record FILE]

prints one line ``ready grpc=HOST:PORT http=HOST:PORT`` once listening (port 0 picks a free
one), and on SIGTERM or SIGINT one JSON object with the totals (``spans``, ``log_records``,
``metric_points``, ``export_requests``, ``decode_errors``), then exits 0.

Needs ``grpcio``, ``protobuf`` and ``opentelemetry-proto`` (ci/lib.sh ``ensure_rotel`` installs
them into ``$ROTEL_VENV``; run the harness with that venv's python).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import gzip
import http.server
import json
import os
import signal
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import grpc
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
    from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan, Status as PbStatus
except ImportError as e:  # pragma: no cover - depends on the interpreter
    raise SystemExit(
        f"{e}: the e2e harness needs grpcio, protobuf and opentelemetry-proto; run it with the python of "
        "$ROTEL_VENV (ci/lib.sh ensure_rotel installs them there, default ~/.cache/cg-template/rotel-venv)"
    ) from None

__all__ = ["Counts", "DataPoint", "Exemplar", "LogRecord", "Receiver", "Span", "SpanEvent", "SpanLink",
           "Telemetry", "read_recording"]

# signal -> (request class, gRPC service, OTLP/HTTP path)
SIGNALS = {
    "traces": (ExportTraceServiceRequest, "opentelemetry.proto.collector.trace.v1.TraceService", "/v1/traces"),
    "metrics": (ExportMetricsServiceRequest, "opentelemetry.proto.collector.metrics.v1.MetricsService", "/v1/metrics"),
    "logs": (ExportLogsServiceRequest, "opentelemetry.proto.collector.logs.v1.LogsService", "/v1/logs"),
}
PATHS = {path: sig for sig, (_, _, path) in SIGNALS.items()}


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SpanEvent:
    name: str = ""
    time_unix_nano: int = 0
    dropped_attributes_count: int = 0
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SpanLink:
    trace_id: str = ""
    span_id: str = ""
    trace_state: str = ""
    dropped_attributes_count: int = 0
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Exemplar:
    trace_id: str = ""
    span_id: str = ""
    time_unix_nano: int = 0
    value: float | int | None = None
    filtered_attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Scoped:
    resource: dict[str, Any] = dataclasses.field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""

    @property
    def service_name(self) -> str | None:
        return self.resource.get("service.name")

    @property
    def service_instance_id(self) -> str | None:
        return self.resource.get("service.instance.id")


@dataclasses.dataclass
class Span(_Scoped):
    name: str = ""
    kind: str = ""  # CLIENT, SERVER, INTERNAL, PRODUCER, CONSUMER, UNSPECIFIED
    trace_id: str = ""  # lower-case hex
    span_id: str = ""
    parent_span_id: str | None = None  # None for a root span
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status_code: str = "UNSET"  # UNSET, OK, ERROR
    status_message: str = ""
    trace_state: str = ""  # W3C tracestate
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[SpanEvent] = dataclasses.field(default_factory=list)
    links: list[SpanLink] = dataclasses.field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return (self.end_time_unix_nano - self.start_time_unix_nano) / 1e9


@dataclasses.dataclass
class DataPoint(_Scoped):
    """One data point, flattened with its metric's descriptor."""

    name: str = ""
    description: str = ""
    unit: str = ""
    type: str = ""  # Sum, Gauge, Histogram, ExponentialHistogram, Summary
    is_monotonic: bool | None = None  # Sum only
    temporality: str | None = None  # CUMULATIVE, DELTA, UNSPECIFIED (None for Gauge/Summary)
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)
    start_time_unix_nano: int = 0
    time_unix_nano: int = 0
    value: int | float | None = None  # Sum / Gauge
    count: int | None = None  # Histogram / ExponentialHistogram / Summary
    sum: float | None = None
    min: float | None = None
    max: float | None = None
    explicit_bounds: list[float] = dataclasses.field(default_factory=list)
    bucket_counts: list[int] = dataclasses.field(default_factory=list)  # exponential: positive buckets
    quantiles: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    exemplars: list[Exemplar] = dataclasses.field(default_factory=list)

    def series_key(self) -> tuple:
        """Identity of the time series this point belongs to (resource + metric + attributes +
        start time, so a restarted process is a new series)."""
        return (_freeze(self.resource), self.scope_name, self.name, _freeze(self.attributes),
                self.start_time_unix_nano)


@dataclasses.dataclass
class LogRecord(_Scoped):
    body: Any = None
    severity_text: str = ""
    severity_number: int | None = None
    event_name: str = ""
    trace_id: str | None = None  # None when the record is outside any span
    span_id: str | None = None
    flags: int | None = None
    time_unix_nano: int = 0
    observed_time_unix_nano: int = 0
    attributes: dict[str, Any] = dataclasses.field(default_factory=dict)


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


@dataclasses.dataclass
class Telemetry:
    spans: list[Span] = dataclasses.field(default_factory=list)
    data_points: list[DataPoint] = dataclasses.field(default_factory=list)
    logs: list[LogRecord] = dataclasses.field(default_factory=list)
    collector_lines: list[str] = dataclasses.field(default_factory=list)  # rotel's own log, when behind rotel
    unparsed: list[str] = dataclasses.field(default_factory=list)  # requests that did not decode

    def find_spans(self, name: str | None = None, kind: str | None = None, service: str | None = None) -> list[Span]:
        return [s for s in self.spans if (name is None or s.name == name) and (kind is None or s.kind == kind)
                and (service is None or s.service_name == service)]

    def find_points(self, name: str, service: str | None = None, **attrs: Any) -> list[DataPoint]:
        return [p for p in self.data_points if p.name == name and (service is None or p.service_name == service)
                and all(p.attributes.get(k) == v for k, v in attrs.items())]

    def find_logs(self, service: str | None = None) -> list[LogRecord]:
        return [r for r in self.logs if service is None or r.service_name == service]

    def latest_points(self, name: str, service: str | None = None, **attrs: Any) -> list[DataPoint]:
        """Last point (greatest timestamp) of every series of metric ``name``."""
        latest: dict[tuple, DataPoint] = {}
        for p in self.find_points(name, service, **attrs):
            key = p.series_key()
            if key not in latest or p.time_unix_nano >= latest[key].time_unix_nano:
                latest[key] = p
        return list(latest.values())

    def metric_total(self, name: str, service: str | None = None, **attrs: Any) -> float:
        """Total of a Sum metric (or the count of a histogram) over all matching series.

        Cumulative series contribute their last value (each export repeats the running total);
        delta series contribute the sum of all their points."""
        points = self.find_points(name, service, **attrs)
        total: float = sum(_point_amount(p) for p in points if p.temporality == "DELTA")
        latest: dict[tuple, DataPoint] = {}
        for p in points:
            if p.temporality == "DELTA":
                continue
            key = p.series_key()
            if key not in latest or p.time_unix_nano >= latest[key].time_unix_nano:
                latest[key] = p
        return total + sum(_point_amount(p) for p in latest.values())

    def metric_names(self) -> set[str]:
        return {p.name for p in self.data_points}

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for s in self.spans:
            kinds[f"{s.service_name}/{s.name}"] = kinds.get(f"{s.service_name}/{s.name}", 0) + 1
        return {"spans": len(self.spans), "spans_by_name": kinds, "data_points": len(self.data_points),
                "metrics": sorted(self.metric_names()), "logs": len(self.logs),
                "undecoded_requests": len(self.unparsed)}


def _point_amount(p: DataPoint) -> float:
    if p.value is not None:
        return p.value
    return p.count if p.count is not None else 0


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _value(v) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, kind)  # string_value, bool_value, int_value, double_value, bytes_value


def _attrs(kvs) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex(b: bytes) -> str | None:
    return b.hex() if b else None


def _number(p) -> int | float | None:
    kind = p.WhichOneof("value")
    return getattr(p, kind) if kind else None


def _optional(p, field: str) -> float | None:
    return getattr(p, field) if p.HasField(field) else None


_KIND = {v: PbSpan.SpanKind.Name(v).removeprefix("SPAN_KIND_") for v in PbSpan.SpanKind.values()}
_STATUS = {v: PbStatus.StatusCode.Name(v).removeprefix("STATUS_CODE_") for v in PbStatus.StatusCode.values()}
_TEMPORALITY = {v: AggregationTemporality.Name(v).removeprefix("AGGREGATION_TEMPORALITY_")
                for v in AggregationTemporality.values()}
_METRIC_TYPE = {"sum": "Sum", "gauge": "Gauge", "histogram": "Histogram",
                "exponential_histogram": "ExponentialHistogram", "summary": "Summary"}


def _scopes(resources, scopes_field: str):
    """(resource attributes, scope name, scope version, scoped message) of a request."""
    for r in resources:
        res = _attrs(r.resource.attributes)
        for sc in getattr(r, scopes_field):
            yield res, sc.scope.name, sc.scope.version, sc


def decode_traces(req, out: Telemetry) -> None:
    for res, scope, version, ss in _scopes(req.resource_spans, "scope_spans"):
        for s in ss.spans:
            out.spans.append(Span(
                resource=res, scope_name=scope, scope_version=version, name=s.name, kind=_KIND.get(s.kind, str(s.kind)),
                trace_id=s.trace_id.hex(), span_id=s.span_id.hex(), parent_span_id=_hex(s.parent_span_id),
                start_time_unix_nano=s.start_time_unix_nano, end_time_unix_nano=s.end_time_unix_nano,
                status_code=_STATUS.get(s.status.code, str(s.status.code)), status_message=s.status.message,
                trace_state=s.trace_state, attributes=_attrs(s.attributes),
                events=[SpanEvent(e.name, e.time_unix_nano, e.dropped_attributes_count, _attrs(e.attributes))
                        for e in s.events],
                links=[SpanLink(k.trace_id.hex(), k.span_id.hex(), k.trace_state, k.dropped_attributes_count,
                                _attrs(k.attributes)) for k in s.links]))


def decode_logs(req, out: Telemetry) -> None:
    for res, scope, version, sl in _scopes(req.resource_logs, "scope_logs"):
        for r in sl.log_records:
            out.logs.append(LogRecord(
                resource=res, scope_name=scope, scope_version=version,
                body=_value(r.body) if r.HasField("body") else None, severity_text=r.severity_text,
                severity_number=r.severity_number, event_name=r.event_name, trace_id=_hex(r.trace_id),
                span_id=_hex(r.span_id), flags=r.flags, time_unix_nano=r.time_unix_nano,
                observed_time_unix_nano=r.observed_time_unix_nano, attributes=_attrs(r.attributes)))


def decode_metrics(req, out: Telemetry) -> None:
    for res, scope, version, sm in _scopes(req.resource_metrics, "scope_metrics"):
        for m in sm.metrics:
            kind = m.WhichOneof("data")
            if kind is None:
                continue
            data = getattr(m, kind)
            temporality = getattr(data, "aggregation_temporality", None)
            for p in data.data_points:
                dp = DataPoint(
                    resource=res, scope_name=scope, scope_version=version, name=m.name, description=m.description,
                    unit=m.unit, type=_METRIC_TYPE[kind], is_monotonic=data.is_monotonic if kind == "sum" else None,
                    temporality=None if temporality is None else _TEMPORALITY.get(temporality, str(temporality)),
                    attributes=_attrs(p.attributes), start_time_unix_nano=p.start_time_unix_nano,
                    time_unix_nano=p.time_unix_nano)
                if kind in ("sum", "gauge"):
                    dp.value = _number(p)
                else:
                    dp.count = p.count
                    dp.sum = _optional(p, "sum") if kind != "summary" else p.sum
                if kind in ("histogram", "exponential_histogram"):
                    dp.min, dp.max = _optional(p, "min"), _optional(p, "max")
                if kind == "histogram":
                    dp.explicit_bounds, dp.bucket_counts = list(p.explicit_bounds), list(p.bucket_counts)
                elif kind == "exponential_histogram":
                    dp.bucket_counts = list(p.positive.bucket_counts)
                elif kind == "summary":
                    dp.quantiles = [(q.quantile, q.value) for q in p.quantile_values]
                if kind != "summary":
                    dp.exemplars = [Exemplar(e.trace_id.hex(), e.span_id.hex(), e.time_unix_nano, _number(e),
                                             _attrs(e.filtered_attributes)) for e in p.exemplars]
                out.data_points.append(dp)


DECODERS = {"traces": decode_traces, "metrics": decode_metrics, "logs": decode_logs}


def count(sig: str, req) -> int:
    """Spans, log records or metric data points in a request, without building records."""
    if sig == "traces":
        return sum(len(ss.spans) for rs in req.resource_spans for ss in rs.scope_spans)
    if sig == "logs":
        return sum(len(sl.log_records) for rl in req.resource_logs for sl in rl.scope_logs)
    n = 0
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                n += len(getattr(m, kind).data_points) if kind else 0
    return n


# --------------------------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------------------------


def otel_env(protocol: str, grpc_endpoint: str, http_endpoint: str | None) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_* variables pointing an SDK at these endpoints."""
    if protocol in ("http", "http/protobuf") and http_endpoint:
        return {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": http_endpoint}
    if protocol == "grpc":
        return {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": grpc_endpoint}
    raise ValueError(f"no OTLP endpoint for protocol {protocol!r} (grpc | http/protobuf)")


@dataclasses.dataclass
class Counts:
    spans: int = 0
    log_records: int = 0
    metric_points: int = 0
    export_requests: int = 0
    decode_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_COUNT_FIELD = {"traces": "spans", "logs": "log_records", "metrics": "metric_points"}
_RECORD_TAG = {"traces": b"T", "metrics": b"M", "logs": b"L"}


class Receiver:
    """OTLP receiver on ``host``: gRPC on ``grpc_port`` and, unless ``http_port`` is None,
    OTLP/HTTP (protobuf bodies) on ``http_port`` (0 = a free port, known after :meth:`start`).

    Every request is decoded on arrival and counted (:attr:`counts`); unless ``count_only``,
    the messages are kept and turned into records by :meth:`telemetry`. ``record`` names a
    file that gets every raw request (see :func:`read_recording`), for test samples.

    ``tls`` = (certificate chain file, key file) serves both protocols over TLS (endpoints become
    ``https://``); with ``client_ca`` (a CA bundle file) only exporters presenting a certificate
    it signed are served (mutual TLS)."""

    def __init__(self, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int | None = 0,
                 count_only: bool = False, record: str | None = None, workers: int = 8,
                 tls: tuple[str, str] | None = None, client_ca: str | None = None) -> None:
        self.host, self.grpc_port, self.http_port = host, grpc_port, http_port
        self.tls, self.client_ca = tls, client_ca
        self.count_only = count_only
        self.workers = workers
        self._record_path = record
        self._record = None
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()
        self._counts = Counts()
        self._pending: list[tuple[str, Any]] = []
        self._telemetry = Telemetry()
        self._grpc = None
        self._http = None
        self.started_at: float | None = None

    # -- endpoints -------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def grpc_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.http_port}"

    def otel_env(self, protocol: str = "grpc") -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_* variables pointing an SDK straight at this receiver."""
        return otel_env(protocol, self.grpc_endpoint, None if self.http_port is None else self.http_endpoint)

    # -- lifecycle -------------------------------------------------------------------------

    def running(self) -> bool:
        return self._grpc is not None

    def start(self) -> "Receiver":
        if self._record_path and self._record is None:
            self._record = open(self._record_path, "ab")
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=self.workers),
                             options=[("grpc.max_receive_message_length", -1), ("grpc.so_reuseport", 0)])
        for sig, (_, service, _) in SIGNALS.items():
            handler = grpc.unary_unary_rpc_method_handler(self._grpc_export(sig))  # bytes in, bytes out
            server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, {"Export": handler}),))
        if self.tls:
            chain, key = (Path(f).read_bytes() for f in self.tls)
            ca = Path(self.client_ca).read_bytes() if self.client_ca else None
            creds = grpc.ssl_server_credentials([(key, chain)], root_certificates=ca,
                                                require_client_auth=ca is not None)
            port = server.add_secure_port(f"{self.host}:{self.grpc_port}", creds)
        else:
            port = server.add_insecure_port(f"{self.host}:{self.grpc_port}")
        if port == 0:
            raise OSError(f"cannot listen on {self.host}:{self.grpc_port} (gRPC)")
        self.grpc_port = port
        server.start()
        self._grpc = server
        if self.http_port is not None:
            self._http = _HttpServer((self.host, self.http_port), _HttpHandler)
            self._http.receiver = self
            if self.tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(*self.tls)
                if self.client_ca:
                    context.load_verify_locations(self.client_ca)
                    context.verify_mode = ssl.CERT_REQUIRED
                self._http.socket = context.wrap_socket(self._http.socket, server_side=True)
            self.http_port = self._http.server_address[1]
            threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True).start()
        self.started_at = time.monotonic()
        return self

    def stop(self, grace: float = 2.0) -> None:
        """Stop listening; requests in flight get ``grace`` seconds. What was received stays."""
        if self._grpc is not None:
            self._grpc.stop(grace).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._record is not None:
            self._record.close()
            self._record = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- receiving -------------------------------------------------------------------------

    def _grpc_export(self, sig: str) -> Callable:
        def export(data: bytes, context) -> bytes:
            if not self.ingest(sig, data):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an OTLP {sig} request")
            return b""  # an empty Export*ServiceResponse: everything accepted
        return export

    def ingest(self, sig: str, data: bytes) -> bool:
        """Decode and count one export request of signal ``sig``; False if it does not decode."""
        try:
            req = SIGNALS[sig][0].FromString(data)
        except DecodeError as e:
            with self._lock:
                self._counts.decode_errors += 1
                self._telemetry.unparsed.append(f"{sig} request of {len(data)} bytes: {e}")
            return False
        n = count(sig, req)
        with self._lock:
            c = self._counts
            c.export_requests += 1
            setattr(c, _COUNT_FIELD[sig], getattr(c, _COUNT_FIELD[sig]) + n)
            if not self.count_only:
                self._pending.append((sig, req))
            if self._record is not None:
                self._record.write(_RECORD_TAG[sig] + struct.pack(">I", len(data)) + data)
                self._record.flush()
        return True

    # -- reading ---------------------------------------------------------------------------

    @property
    def counts(self) -> Counts:
        with self._lock:
            return dataclasses.replace(self._counts)

    def telemetry(self) -> Telemetry:
        """Everything received so far, as records: the same Telemetry object, grown by the
        requests that arrived since the previous call."""
        if self.count_only:
            raise RuntimeError("a count_only receiver keeps no records; read .counts")
        with self._decode_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            for sig, req in pending:
                DECODERS[sig](req, self._telemetry)
            return self._telemetry

    def wait_for(self, predicate: Callable[[Telemetry], bool], timeout: float = 30.0, interval: float = 0.25,
                 what: str = "telemetry", alive: Callable[[], None] | None = None) -> Telemetry:
        """Poll :meth:`telemetry` until ``predicate`` holds; TimeoutError (with a summary) after
        ``timeout`` s. ``alive`` is called on each round and may raise (a collector died)."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.telemetry()
            if predicate(t):
                return t
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not received within {timeout}s; got {t.summary()}")
            if alive is not None:
                alive()
            time.sleep(interval)


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    """OTLP/HTTP with protobuf bodies (gzip allowed); JSON bodies are refused (415)."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sig = PATHS.get(self.path.split("?", 1)[0])
        if sig is None:
            return self._answer(404)
        if "json" in self.headers.get("Content-Type", ""):
            return self._answer(415)
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
        except OSError:
            return self._answer(400)
        self._answer(200 if self.server.receiver.ingest(sig, body) else 400)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")  # an empty Export*ServiceResponse
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def read_recording(path: str) -> Telemetry:
    """Decode a file written by ``Receiver(record=path)``: every request, in arrival order."""
    out = Telemetry()
    tags = {v: k for k, v in _RECORD_TAG.items()}
    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        sig = tags[data[i:i + 1]]
        (n,) = struct.unpack(">I", data[i + 1:i + 5])
        DECODERS[sig](SIGNALS[sig][0].FromString(data[i + 5:i + 5 + n]), out)
        i += 5 + n
    return out


# --------------------------------------------------------------------------------------------
# Standalone
# --------------------------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Prints 'ready grpc=H:P http=H:P' once listening; on SIGTERM/SIGINT, "
                                       "one JSON object of totals, then exits 0.")
    p.add_argument("--grpc", type=_host_port, required=True, metavar="HOST:PORT", help="OTLP/gRPC address (port 0: any)")
    p.add_argument("--http", type=_host_port, metavar="HOST:PORT", help="also OTLP/HTTP protobuf on this address")
    p.add_argument("--count-only", action="store_true",
                   help="only count (what the standalone receiver does anyway: it keeps no records)")
    p.add_argument("--ready-file", help="also write the ready line to this file once listening")
    p.add_argument("--record", help="append every raw request to this file (see read_recording)")
    p.add_argument("--workers", type=int, default=8, help="gRPC handler threads (default 8)")
    a = p.parse_args(argv)
    if a.http and a.http[0] != a.grpc[0]:
        p.error("--grpc and --http must use the same host")
    stop = threading.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, lambda *_: stop.set())
    rx = Receiver(a.grpc[0], a.grpc[1], a.http[1] if a.http else None, count_only=True, record=a.record,
                  workers=a.workers).start()
    ready = f"ready grpc={rx.host}:{rx.grpc_port}" + (f" http={rx.host}:{rx.http_port}" if a.http else "")
    if a.ready_file:  # written whole (rename) before the line is printed
        with open(a.ready_file + ".tmp", "w") as f:
            f.write(ready + "\n")
        os.replace(a.ready_file + ".tmp", a.ready_file)
    print(ready, flush=True)
    while not stop.wait(0.5):
        pass
    rx.stop()
    print(json.dumps(rx.counts.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
