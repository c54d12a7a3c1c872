"""Run the rotel OpenTelemetry collector for end-to-end tests and parse what it received.

rotel (https://github.com/streamfold/rotel) is started in the foreground with the blackhole
exporter and ``--debug-log traces|metrics|logs --debug-log-verbosity detailed``: every batch it
receives is then printed on its stdout in the same text layout as the OpenTelemetry collector's
``debug`` exporter at ``detailed`` verbosity.  This module captures that output to a file and turns
it back into records (:class:`Span`, :class:`DataPoint`, :class:`LogRecord`).

Layout, as printed by rotel 0.0.1-alpha10 (src/topology/debug/debug_buffer.rs)::

    ResourceSpans #0                      ResourceLog #0              ResourceMetrics #0
    Resource SchemaURL:                   ...                         ...
    Resource attributes:                  ScopeLogs #0                ScopeMetrics #0
         -> service.name: Str(my-service) InstrumentationScope srv    InstrumentationScope telemetry
    ScopeSpans #0                         LogRecord #0                Metric #0
    ScopeSpans SchemaURL:                 ObservedTimestamp: <ns>     Descriptor:
    InstrumentationScope telemetry        Timestamp: <ns>                  -> Name: myservice.requests.total
    Span #0                               SeverityText: INFO               -> Description: ...
        Trace ID       : <32 hex>         SeverityNumber: SEVERITY_NUMBER_INFO(9)
        Parent ID      : <16 hex or ''>   EventName: event file.rs:12      -> Unit: {requests}
        ID             : <16 hex>         Body: Str(message)               -> DataType: Sum
        Name           : grpc.server...   Attributes:  (only if any)       -> IsMonotonic: true
        Kind           : SPAN_KIND_SERVER      -> k: Str(v)                -> AggregationTemporality: AGGREGATION_TEMPORALITY_CUMULATIVE
    Start time: <ns>                          Trace ID       : <hex or ''> NumberDataPoints #0
    End time: <ns>                            Span ID        : <hex or ''> Data point attributes:
        Status code    : STATUS_CODE_ERROR Flags: 1                         -> method: Str(ProcessRequest)
        Status message : text                                             StartTimestamp: <ns>
    Attributes:                                                           Timestamp: <ns>
         -> rpc.method: Str(...)                                          Value: 3
    Events:                                                               (Histograms: Count/Sum/Min/Max,
    SpanEvent #0                                                           ExplicitBounds #i: b,
         -> Name: exception                                                Buckets #i, Count: c)
         -> Timestamp: <ns>
         -> DroppedAttributesCount: 0
         -> Attributes::
              -> exception.type: Str(DatabaseError)

Attribute values are printed as ``Str(..)``, ``Int(..)``, ``Double(..)``, ``Bool(..)``,
``Slice(..)``, ``Map(..)``, ``Bytes(..)`` or ``Empty``; the parser converts the first four to
Python values and keeps the others as the printed text.  Blocks are printed whole (one locked
write per batch), rotel's own log lines (``2026-...Z  INFO ...``, ANSI-coloured) are interleaved
between blocks and are returned separately in :attr:`Telemetry.collector_lines`.

Limits of this format (see README.md): a value containing a newline continues on the next lines
(handled for the last field seen, but a continuation line that itself looks like a header is
misread), parentheses inside ``Str(..)`` are kept as-is, nothing says which export request or
protocol a batch came from, and rotel prints at *receive* time, so a record counted here was
accepted by the collector, not necessarily exported anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "DataPoint",
    "LogRecord",
    "Rotel",
    "RotelError",
    "Span",
    "SpanEvent",
    "SpanLink",
    "Telemetry",
    "BasicCounts",
    "find_rotel_agent",
    "parse_basic_output",
    "parse_rotel_output",
    "parse_value",
]

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
COLLECTOR_LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


class RotelError(RuntimeError):
    pass


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
    trace_id: str = ""
    span_id: str = ""
    parent_span_id: str | None = None  # None for a root span
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    status_code: str = "UNSET"  # UNSET, OK, ERROR
    status_message: str = ""
    trace_state: str = ""  # W3C tracestate, printed only when not empty
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
    is_monotonic: bool | None = None
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
    bucket_counts: list[int] = dataclasses.field(default_factory=list)
    quantiles: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    exemplars: list[Exemplar] = dataclasses.field(default_factory=list)

    def series_key(self) -> tuple:
        """Identity of the time series this point belongs to (resource + metric + attributes +
        start time, so a restarted process is a new series)."""
        return (
            _freeze(self.resource),
            self.scope_name,
            self.name,
            _freeze(self.attributes),
            self.start_time_unix_nano,
        )


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
    collector_lines: list[str] = dataclasses.field(default_factory=list)  # rotel's own log
    unparsed: list[tuple[int, str]] = dataclasses.field(default_factory=list)  # (line no, text)

    # ---- selection helpers ---------------------------------------------------------------

    def find_spans(
        self, name: str | None = None, kind: str | None = None, service: str | None = None
    ) -> list[Span]:
        return [
            s
            for s in self.spans
            if (name is None or s.name == name)
            and (kind is None or s.kind == kind)
            and (service is None or s.service_name == service)
        ]

    def find_points(self, name: str, service: str | None = None, **attrs: Any) -> list[DataPoint]:
        return [
            p
            for p in self.data_points
            if p.name == name
            and (service is None or p.service_name == service)
            and all(p.attributes.get(k) == v for k, v in attrs.items())
        ]

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
        total: float = 0
        points = self.find_points(name, service, **attrs)
        delta = [p for p in points if p.temporality == "DELTA"]
        for p in delta:
            total += _point_amount(p)
        cumulative_names = {id(p) for p in delta}
        latest: dict[tuple, DataPoint] = {}
        for p in points:
            if id(p) in cumulative_names:
                continue
            key = p.series_key()
            if key not in latest or p.time_unix_nano >= latest[key].time_unix_nano:
                latest[key] = p
        for p in latest.values():
            total += _point_amount(p)
        return total

    def metric_names(self) -> set[str]:
        return {p.name for p in self.data_points}

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for s in self.spans:
            kinds[f"{s.service_name}/{s.name}"] = kinds.get(f"{s.service_name}/{s.name}", 0) + 1
        return {
            "spans": len(self.spans),
            "spans_by_name": kinds,
            "data_points": len(self.data_points),
            "metrics": sorted(self.metric_names()),
            "logs": len(self.logs),
            "unparsed_lines": len(self.unparsed),
        }


def _point_amount(p: DataPoint) -> float:
    if p.value is not None:
        return p.value
    if p.count is not None:
        return p.count
    return 0


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_TYPED_VALUE_RE = re.compile(r"^(Str|Int|Double|Bool|Slice|Map|Bytes)\((.*)\)$", re.S)


def parse_value(raw: str) -> Any:
    """Convert a printed attribute value (``Str(x)``, ``Int(3)``...) to a Python value."""
    m = _TYPED_VALUE_RE.match(raw)
    if not m:
        return None if raw == "Empty" else raw
    kind, inner = m.group(1), m.group(2)
    try:
        if kind == "Str":
            return inner
        if kind == "Int":
            return int(inner)
        if kind == "Double":
            return float(inner)
        if kind == "Bool":
            return inner == "true"
    except ValueError:
        pass
    return raw  # Slice(..), Map(..), Bytes(..) are kept as printed


def _num(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)  # rotel prints f64 with Rust's Display: 0.5, 1, NaN, inf


def _strip_prefix(value: str, prefix: str) -> str:
    return value[len(prefix):] if value.startswith(prefix) else value


# Fixed-width fields: "    Trace ID       : abc" (DebugBuffer::log_attr, key padded to 15)
_PADDED_FIELD_RE = re.compile(r"^    (Trace ID|Parent ID|ID|Name|Kind|Status code|Status message|Span ID|TraceState)\s*: ?(.*)$")
_ARROW_RE = re.compile(r"^(\s+)-> ([^:]*?): ?(.*)$")
_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z ]*?) #(\d+)$")
_KV_RE = re.compile(r"^([A-Za-z][A-Za-z ]*): ?(.*)$")
_BUCKET_RE = re.compile(r"^Buckets #(\d+), Count: (\d+)$")
_BOUND_RE = re.compile(r"^ExplicitBounds #(\d+): (.*)$")
_EXP_BUCKET_RE = re.compile(r"^Bucket [\[(](.*), (.*)[\])], Count: (\d+)$")
_QUANTILE_RE = re.compile(r"^QuantileValue #(\d+): Quantile (.*), Value (.*)$")
_SEVERITY_RE = re.compile(r"\((-?\d+)\)$")


class _Parser:
    def __init__(self) -> None:
        self.out = Telemetry()
        self.signal: str | None = None  # traces | logs | metrics
        self.resource: dict[str, Any] = {}
        self.scope = ("", "")
        self.span: Span | None = None
        self.log: LogRecord | None = None
        self.metric: dict[str, Any] | None = None
        self.point: DataPoint | None = None
        # where "-> key: value" lines go: ("attrs", dict) | ("descriptor",) | ("event", ev) ...
        self.arrow: tuple | None = None
        # the last free-text field set, to append continuation lines of multi-line values
        self.last: tuple[Any, str, str, bool] | None = None  # (obj, field, raw, typed)

    # -- helpers ---------------------------------------------------------------------------

    def _set(self, obj: Any, field: str, raw: str, typed: bool) -> None:
        value = parse_value(raw) if typed else raw
        if isinstance(obj, dict):
            obj[field] = value
        else:
            setattr(obj, field, value)
        self.last = (obj, field, raw, typed)

    def _close_item(self) -> None:
        self.span = None
        self.log = None
        self.point = None
        self.arrow = None
        self.last = None

    def _new_point(self, kind: str) -> None:
        m = self.metric or {}
        self.point = DataPoint(
            resource=self.resource,
            scope_name=self.scope[0],
            scope_version=self.scope[1],
            name=m.get("name", ""),
            description=m.get("description", ""),
            unit=m.get("unit", ""),
            type=m.get("type", kind),
            is_monotonic=m.get("is_monotonic"),
            temporality=m.get("temporality"),
        )
        self.out.data_points.append(self.point)
        self.arrow = None
        self.last = None

    # -- main ------------------------------------------------------------------------------

    def feed(self, lineno: int, line: str) -> None:
        line = ANSI_RE.sub("", line).rstrip("\r\n")
        if not line.strip():
            return
        if COLLECTOR_LINE_RE.match(line):
            self.out.collector_lines.append(line)
            return

        m = _HEADER_RE.match(line)
        if m and self._header(m.group(1), int(m.group(2))):
            return

        m = _ARROW_RE.match(line)
        if m and self.arrow is not None and self._arrow(m.group(1), m.group(2), m.group(3)):
            return

        m = _PADDED_FIELD_RE.match(line)
        if m and self._padded(m.group(1), m.group(2)):
            return

        if self._other(line):
            return

        if self.last is not None:  # continuation of a multi-line value
            obj, field, raw, typed = self.last
            self._set(obj, field, raw + "\n" + line, typed)
            return
        self.out.unparsed.append((lineno, line))

    def _header(self, name: str, _index: int) -> bool:
        if name == "ResourceSpans":
            self.signal = "traces"
        elif name in ("ResourceLog", "ResourceLogs"):
            self.signal = "logs"
        elif name == "ResourceMetrics":
            self.signal = "metrics"
        elif name in ("ScopeSpans", "ScopeLogs", "ScopeMetrics"):
            self.scope = ("", "")
            self._close_item()
            return True
        elif name == "Span":
            self._close_item()
            self.span = Span(resource=self.resource, scope_name=self.scope[0], scope_version=self.scope[1])
            self.out.spans.append(self.span)
            return True
        elif name == "SpanEvent" and self.span is not None:
            ev = SpanEvent()
            self.span.events.append(ev)
            self.arrow = ("event", ev)
            self.last = None
            return True
        elif name == "SpanLink" and self.span is not None:
            link = SpanLink()
            self.span.links.append(link)
            self.arrow = ("link", link)
            self.last = None
            return True
        elif name == "LogRecord":
            self._close_item()
            self.log = LogRecord(resource=self.resource, scope_name=self.scope[0], scope_version=self.scope[1])
            self.out.logs.append(self.log)
            return True
        elif name == "Metric":
            self._close_item()
            self.metric = {}
            return True
        elif name in (
            "NumberDataPoints",
            "HistogramDataPoints",
            "ExponentialHistogramDataPoints",
            "SummaryDataPoints",
        ):
            self._new_point(name.replace("DataPoints", ""))
            return True
        elif name == "Exemplar" and self.point is not None:
            ex = Exemplar()
            self.point.exemplars.append(ex)
            self.arrow = ("exemplar", ex)
            self.last = None
            return True
        else:
            return False
        # a new resource
        self.resource = {}
        self.scope = ("", "")
        self.metric = None
        self._close_item()
        return True

    def _arrow(self, indent: str, key: str, raw: str) -> bool:
        kind = self.arrow[0]
        if kind not in ("attrs", "descriptor"):
            self.last = None
        nested = len(indent) > 5  # "          -> k: v" = attributes of an event/link/exemplar
        if kind == "attrs":
            self._set(self.arrow[1], key, raw, True)
            return True
        if kind == "descriptor" and self.metric is not None:
            field = {
                "Name": "name",
                "Description": "description",
                "Unit": "unit",
                "DataType": "type",
                "IsMonotonic": "is_monotonic",
                "AggregationTemporality": "temporality",
            }.get(key)
            if field is None:
                return False
            if field == "is_monotonic":
                self.metric[field] = raw == "true"
            elif field == "temporality":
                self.metric[field] = _strip_prefix(raw, "AGGREGATION_TEMPORALITY_")
            else:
                self.metric[field] = raw
            self.last = (self.metric, field, raw, False) if field == "description" else None
            return True
        if kind == "descriptor":
            return False
        obj = self.arrow[1]
        if nested and kind in ("event_attrs", "link_attrs", "exemplar_attrs"):
            self._set(obj.attributes if kind != "exemplar_attrs" else obj.filtered_attributes, key, raw, True)
            return True
        if key in ("Attributes:", "Attributes", "FilteredAttributes"):
            self.arrow = (kind.replace("_attrs", "") + "_attrs", obj)
            self.last = None
            return True
        if kind.startswith("event"):
            if key == "Name":
                self._set(obj, "name", raw, False)
            elif key == "Timestamp":
                obj.time_unix_nano = int(raw)
            elif key == "DroppedAttributesCount":
                obj.dropped_attributes_count = int(raw)
            else:
                return False
            return True
        if kind.startswith("link"):
            if key == "Trace ID":
                obj.trace_id = raw
            elif key == "ID":
                obj.span_id = raw
            elif key == "TraceState":
                obj.trace_state = raw
            elif key == "DroppedAttributesCount":
                obj.dropped_attributes_count = int(raw)
            else:
                return False
            return True
        if kind.startswith("exemplar"):
            if key == "Trace ID":
                obj.trace_id = raw
            elif key == "Span ID":
                obj.span_id = raw
            elif key == "Timestamp":
                obj.time_unix_nano = int(raw)
            elif key == "Value":
                obj.value = _num(raw)
            else:
                return False
            return True
        return False

    def _padded(self, key: str, raw: str) -> bool:
        if self.span is not None:
            s = self.span
            if key == "Trace ID":
                s.trace_id = raw
            elif key == "Parent ID":
                s.parent_span_id = raw or None
            elif key == "ID":
                s.span_id = raw
            elif key == "Name":
                self._set(s, "name", raw, False)
                return True
            elif key == "Kind":
                s.kind = _strip_prefix(raw, "SPAN_KIND_")
            elif key == "Status code":
                s.status_code = _strip_prefix(raw, "STATUS_CODE_")
            elif key == "Status message":
                self._set(s, "status_message", raw, False)
                return True
            elif key == "TraceState":
                self._set(s, "trace_state", raw, False)
                return True
            else:
                return False
            self.last = None
            return True
        if self.log is not None:
            if key == "Trace ID":
                self.log.trace_id = raw or None
            elif key == "Span ID":
                self.log.span_id = raw or None
            else:
                return False
            self.last = None
            return True
        return False

    def _other(self, line: str) -> bool:
        if line.startswith("InstrumentationScope ") and not line.startswith("InstrumentationScope attributes:"):
            parts = line[len("InstrumentationScope "):].split(" ", 1)
            self.scope = (parts[0], parts[1].strip() if len(parts) > 1 else "")
            self._close_item()
            return True

        m = _BUCKET_RE.match(line)
        if m and self.point is not None:
            self.point.bucket_counts.append(int(m.group(2)))
            return True
        m = _BOUND_RE.match(line)
        if m and self.point is not None:
            self.point.explicit_bounds.append(float(m.group(2)))
            return True
        m = _EXP_BUCKET_RE.match(line)
        if m and self.point is not None:
            self.point.bucket_counts.append(int(m.group(3)))
            return True
        m = _QUANTILE_RE.match(line)
        if m and self.point is not None:
            self.point.quantiles.append((float(m.group(2)), float(m.group(3))))
            return True

        m = _KV_RE.match(line)
        if not m:
            return False
        key, raw = m.group(1), m.group(2)

        # section headers that switch where "-> k: v" lines go
        if raw == "" and line.endswith(":"):
            if key == "Resource attributes":
                self.arrow = ("attrs", self.resource)
                return True
            if key == "InstrumentationScope attributes":
                self.arrow = ("attrs", {})  # not kept
                return True
            if key == "Attributes":
                target = self.span or self.log
                if target is None:
                    return False
                self.arrow = ("attrs", target.attributes)
                self.last = None
                return True
            if key == "Data point attributes" and self.point is not None:
                self.arrow = ("attrs", self.point.attributes)
                return True
            if key == "Descriptor" and self.metric is not None:
                self.arrow = ("descriptor",)
                return True
            if key in ("Events", "Links", "Exemplars"):
                self.arrow = None
                self.last = None
                return True
        if key.endswith("SchemaURL"):
            self.last = None
            return True

        if self.span is not None:
            if key == "Start time":
                self.span.start_time_unix_nano = int(raw)
            elif key == "End time":
                self.span.end_time_unix_nano = int(raw)
            else:
                return False
            self.last = None
            return True

        if self.log is not None:
            r = self.log
            if key == "ObservedTimestamp":
                r.observed_time_unix_nano = int(raw)
            elif key == "Timestamp":
                r.time_unix_nano = int(raw)
            elif key == "SeverityText":
                r.severity_text = raw
            elif key == "SeverityNumber":
                sm = _SEVERITY_RE.search(raw)
                r.severity_number = int(sm.group(1)) if sm else None
            elif key == "EventName":
                r.event_name = raw
            elif key == "Body":
                self._set(r, "body", raw, True)
                return True
            elif key == "Flags":
                r.flags = int(raw)
            else:
                return False
            self.last = None
            return True

        if self.point is not None:
            p = self.point
            if key == "StartTimestamp":
                p.start_time_unix_nano = int(raw)
            elif key == "Timestamp":
                p.time_unix_nano = int(raw)
            elif key == "Value":
                p.value = _num(raw)
            elif key == "Count":
                p.count = int(raw)
            elif key == "Sum":
                p.sum = float(raw)
            elif key == "Min":
                p.min = float(raw)
            elif key == "Max":
                p.max = float(raw)
            else:
                return False
            self.last = None
            return True
        return False


def parse_rotel_output(text: str | Iterable[str]) -> Telemetry:
    """Parse rotel's detailed debug output (a string or an iterable of lines)."""
    lines = text.splitlines() if isinstance(text, str) else text
    p = _Parser()
    for i, line in enumerate(lines, 1):
        p.feed(i, line)
    return p.out


# --------------------------------------------------------------------------------------------
# Basic verbosity: one line per batch, counts only
# --------------------------------------------------------------------------------------------

# rotel 0.0.1-alpha10 at --debug-log-verbosity basic prints, per batch it receives (after ANSI
# colour codes are removed):
#   2026-11-23T23:52:53.356257Z  INFO Received traces. data_type="traces" resource_spans=1 spans=60
_BASIC_RE = re.compile(r"\bReceived (\w+)\.\s+(.*)$")
_BASIC_FIELD_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclasses.dataclass
class BasicCounts:
    """Totals of the numeric fields of every ``Received <type>.`` line, by data type:
    ``counts["traces"]["spans"]``; ``batches`` counts the lines."""

    counts: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    batches: dict[str, int] = dataclasses.field(default_factory=dict)
    other_lines: int = 0

    def get(self, data_type: str, field: str) -> int:
        return self.counts.get(data_type, {}).get(field, 0)

    @property
    def spans(self) -> int:
        return self.get("traces", "spans")


def parse_basic_output(text: str | Iterable[str]) -> BasicCounts:
    """Sum rotel's ``--debug-log-verbosity basic`` lines (cheap to print and to parse at any
    rate, unlike ``detailed``)."""
    out = BasicCounts()
    lines = text.splitlines() if isinstance(text, str) else text
    for line in lines:
        m = _BASIC_RE.search(ANSI_RE.sub("", line))
        if not m:
            if line.strip():
                out.other_lines += 1
            continue
        fields = dict(_BASIC_FIELD_RE.findall(m.group(2)))
        data_type = fields.pop("data_type", m.group(1)).strip('"')
        out.batches[data_type] = out.batches.get(data_type, 0) + 1
        totals = out.counts.setdefault(data_type, {})
        for key, raw in fields.items():
            if raw.isdigit():
                totals[key] = totals.get(key, 0) + int(raw)
    return out


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------


def find_rotel_agent() -> str:
    """Path of the rotel-agent binary: $ROTEL_AGENT, the `rotel` Python package of this
    interpreter, of $ROTEL_VENV (default /opt/rotel-venv), or rotel-agent on PATH."""
    env = os.environ.get("ROTEL_AGENT")
    if env:
        return env
    # This file is itself called rotel.py: probe in isolated mode (-I) from "/" so that
    # `import rotel` finds the PyPI package, not this module.
    probe = "import rotel, os; print(os.path.dirname(rotel.__file__))"
    venv_python = os.path.join(os.environ.get("ROTEL_VENV", "/opt/rotel-venv"), "bin", "python")
    for py in (venv_python, sys.executable):
        if not py or not os.path.exists(py):
            continue
        try:
            pkg_dir = subprocess.run(
                [py, "-I", "-c", probe], capture_output=True, text=True, timeout=30, check=True, cwd="/"
            ).stdout.strip()
        except (subprocess.SubprocessError, OSError):
            continue
        agent = os.path.join(pkg_dir, "rotel-agent")
        if os.access(agent, os.X_OK):
            return agent
    on_path = shutil.which("rotel-agent")
    if on_path:
        return on_path
    raise RotelError(
        "rotel-agent not found: set ROTEL_AGENT, or install rotel "
        "(python3 -m venv /opt/rotel-venv && /opt/rotel-venv/bin/pip install rotel)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Rotel:
    """A rotel-agent process in the foreground, its stdout (the debug output) appended to
    ``<workdir>/<name>.out`` and its stderr to ``<workdir>/<name>.err``.

    Restarts append to the same files, so :meth:`telemetry` always sees everything received
    since the first start.  Usable as a context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        grpc_port: int | None = None,
        http_port: int | None = None,
        host: str = "127.0.0.1",
        name: str = "rotel",
        debug_log: Iterable[str] = ("traces", "metrics", "logs"),
        verbosity: str = "detailed",
        exporter: str = "blackhole",
        extra_args: Iterable[str] = (),
        agent: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        while self.http_port == self.grpc_port:
            self.http_port = free_port(host)
        self.name = name
        self.debug_log = list(debug_log)
        self.verbosity = verbosity
        self.exporter = exporter
        self.extra_args = list(extra_args)
        self.agent = agent or find_rotel_agent()
        self.output_path = self.workdir / f"{name}.out"
        self.stderr_path = self.workdir / f"{name}.err"
        self.pid_file = self.workdir / f"{name}.pid"
        self.log_file = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._parser: _Parser | None = None
        self._offset = 0
        self._lineno = 0

    # -- endpoints -------------------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def otel_env(self, protocol: str = "grpc") -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_* variables pointing an SDK at this collector."""
        if protocol in ("http", "http/protobuf"):
            return {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.http_endpoint,
            }
        if protocol == "grpc":
            return {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": self.grpc_endpoint}
        raise ValueError(f"unknown OTLP protocol {protocol!r} (grpc | http/protobuf)")

    def command(self) -> list[str]:
        cmd = [
            self.agent,
            "start",
            "--otlp-grpc-endpoint",
            f"{self.host}:{self.grpc_port}",
            "--otlp-http-endpoint",
            f"{self.host}:{self.http_port}",
            "--exporter",
            self.exporter,
            "--debug-log-verbosity",
            self.verbosity,
            # only used with --daemon, but keep parallel instances off the shared /tmp defaults
            "--pid-file",
            str(self.pid_file),
            "--log-file",
            str(self.log_file),
        ]
        for d in self.debug_log:
            cmd += ["--debug-log", d]
        return cmd + self.extra_args

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> "Rotel":
        """Start rotel and wait until both OTLP ports accept connections."""
        if self.running():
            raise RotelError(f"{self.name} already running (pid {self.pid})")
        for port in (self.grpc_port, self.http_port):
            if port_open(self.host, port):
                raise RotelError(f"port {self.host}:{port} is already in use; cannot start {self.name}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTEL_")}
        # the first start of this object truncates old files; restarts append to them
        mode = "ab" if self.starts else "wb"
        with open(self.output_path, mode) as out, open(self.stderr_path, mode) as err:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # Ctrl-C of the harness must not hit it first
            )
        self.starts += 1
        self.started_at = time.monotonic()
        deadline = self.started_at + timeout
        pending = [self.grpc_port, self.http_port]
        while pending:
            if self.proc.poll() is not None:
                raise RotelError(
                    f"{self.name} exited with {self.proc.returncode} during start-up:\n" + self.tail()
                )
            pending = [p for p in pending if not port_open(self.host, p)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RotelError(
                    f"{self.name} did not open {self.host}:{pending} within {timeout}s:\n" + self.tail()
                )
            time.sleep(0.05)
        self.ready_after_s = time.monotonic() - self.started_at
        return self

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if still running after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self, timeout: float = 10.0) -> int | None:
        """SIGKILL (a crashed collector: no flush, no goodbye on open connections) and reap it."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def basic_counts(self) -> BasicCounts:
        """Counts from the output so far (for ``verbosity="basic"``)."""
        return parse_basic_output(self.read_output())

    def restart(self, timeout: float = 20.0, stop_timeout: float = 10.0) -> "Rotel":
        self.stop(stop_timeout)
        return self.start(timeout)

    def __enter__(self) -> "Rotel":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- output ----------------------------------------------------------------------------

    def read_output(self) -> str:
        """Everything printed so far, up to the last complete line (a block may be mid-write)."""
        try:
            data = self.output_path.read_bytes()
        except FileNotFoundError:
            return ""
        cut = data.rfind(b"\n")
        return data[: cut + 1].decode("utf-8", errors="replace") if cut >= 0 else ""

    def tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.output_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            chunks.append(f"--- {path} (last {lines} lines) ---\n" + ANSI_RE.sub("", "\n".join(text)))
        return "\n".join(chunks)

    def telemetry(self, fresh: bool = False) -> Telemetry:
        """Everything received so far.  Parsed incrementally: each call only reads the complete
        lines added since the previous one and returns the same, grown, Telemetry object
        (``fresh=True`` re-parses the whole file into a new one)."""
        if fresh or self._parser is None:
            self._parser, self._offset, self._lineno = _Parser(), 0, 0
        try:
            with open(self.output_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        cut = data.rfind(b"\n")
        if cut >= 0:
            self._offset += cut + 1
            for line in data[: cut + 1].decode("utf-8", errors="replace").splitlines():
                self._lineno += 1
                self._parser.feed(self._lineno, line)
        return self._parser.out

    def wait_for(
        self,
        predicate: Callable[[Telemetry], bool],
        timeout: float = 30.0,
        interval: float = 0.25,
        what: str = "telemetry",
    ) -> Telemetry:
        """Re-parse the output until ``predicate(telemetry)`` holds; raise TimeoutError (with the
        last summary) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            t = self.telemetry()
            if predicate(t):
                return t
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not seen in {self.output_path} within {timeout}s; got {t.summary()}")
            if self.proc is not None and self.proc.poll() is not None:
                raise RotelError(f"{self.name} exited ({self.proc.returncode}) while waiting for {what}")
            time.sleep(interval)
