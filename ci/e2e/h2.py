"""Raw HTTP/2 gRPC requests with the nghttp2 command-line tools, for inputs the typed client
cannot send (mutated trace headers, hand-made frames).

- ``h2load`` (load tester): sends a request with any headers (-H) and body (-d FILE, POST) and
  reports HTTP-level counts ("requests: 1 total, ... 1 succeeded", "status codes: 1 2xx").
  It never shows the gRPC status, which travels in the trailers.
- ``nghttp -v`` (client) prints every received header and trailer:
  ``[  0.013] recv (stream_id=13) grpc-status: 13``; :func:`call` parses them.

gRPC message framing: 1 byte compressed flag, 4 bytes big-endian length, then the protobuf
message.  ``MyRequest`` is ``string id = 1`` (tag 0x0a, varint length, bytes).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable, Mapping

PROCESS_PATH = "/myservice.v1.MyService/ProcessRequest"
HEALTH_PATH = "/grpc.health.v1.Health/Check"
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}

CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
         "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
         "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


# --------------------------------------------------------------------------------------------
# Protobuf and gRPC framing
# --------------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("negative varint")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def read_varint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def string_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2); ``value`` may be any bytes (invalid UTF-8 too)."""
    return varint(number << 3 | 2) + varint(len(value)) + value


def my_request(request_id: bytes | str) -> bytes:
    """``MyRequest{id}``; an empty id is encoded as proto3 does: no field at all."""
    if isinstance(request_id, str):
        request_id = request_id.encode()
    return string_field(1, request_id) if request_id else b""


def grpc_frame(message: bytes, compressed: bool = False, declared_length: int | None = None) -> bytes:
    """One length-prefixed message; ``declared_length`` lies about the length (truncation)."""
    n = len(message) if declared_length is None else declared_length
    return struct.pack(">BI", 1 if compressed else 0, n) + message


def parse_frames(body: bytes) -> list[tuple[int, bytes]]:
    """(flag, message) of every complete frame in a gRPC body."""
    out, pos = [], 0
    while pos + 5 <= len(body):
        flag, n = struct.unpack(">BI", body[pos:pos + 5])
        out.append((flag, body[pos + 5:pos + 5 + n]))
        pos += 5 + n
    return out


def health_status(message: bytes) -> str | None:
    """``HealthCheckResponse.status`` (field 1, enum) of a message."""
    pos = 0
    status = 0  # proto3 default when absent
    while pos < len(message):
        key, pos = read_varint(message, pos)
        if key == 0x08:
            status, pos = read_varint(message, pos)
        elif key & 7 == 2:
            n, pos = read_varint(message, pos)
            pos += n
        elif key & 7 == 0:
            _, pos = read_varint(message, pos)
        else:
            return None
    return HEALTH_STATUS.get(status, str(status))


# --------------------------------------------------------------------------------------------
# nghttp
# --------------------------------------------------------------------------------------------

_RECV_HEADER_RE = re.compile(r"^\[\s*[\d.]+\] recv \(stream_id=(\d+)\) ([^:\s][^:]*|:[a-z]+): ?(.*)$")


@dataclasses.dataclass
class Response:
    status: int | None = None  # HTTP :status
    grpc_status: int | None = None
    grpc_message: str | None = None
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # headers and trailers, in order
    body: bytes = b""
    returncode: int = 0
    error: str = ""  # nghttp's stderr, or what went wrong

    @property
    def code(self) -> str | None:
        if self.grpc_status is None:
            return None
        return CODES[self.grpc_status] if 0 <= self.grpc_status < len(CODES) else str(self.grpc_status)


def parse_nghttp_verbose(text: str) -> Response:
    """Headers and trailers received on request streams (stream 0 is the connection)."""
    r = Response()
    for line in text.splitlines():
        m = _RECV_HEADER_RE.match(line)
        if not m or m.group(1) == "0":
            continue
        name, value = m.group(2).strip(), m.group(3).strip()
        r.headers.append((name, value))
        if name == ":status" and value.isdigit():
            r.status = int(value)
        elif name == "grpc-status" and value.isdigit():
            r.grpc_status = int(value)
        elif name == "grpc-message":
            r.grpc_message = urllib.parse.unquote(value)
    return r


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not path:
        raise FileNotFoundError(f"{name} not found: install nghttp2-client (apt-get install nghttp2-client)")
    return path


def _header_args(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    for k, v in items:
        out += ["-H", f"{k}: {v}"]
    return out


def call(base_url: str, path: str, body: bytes, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
         timeout: float = 10.0, want_body: bool = False) -> Response:
    """POST a gRPC body with nghttp; returns the HTTP status, grpc-status/-message (and with
    ``want_body`` the response body, which costs a second request)."""
    all_headers = list(GRPC_HEADERS.items()) + list(headers.items() if isinstance(headers, Mapping) else headers)
    with tempfile.NamedTemporaryFile(prefix="e2e-body-", suffix=".bin") as f:
        f.write(body)
        f.flush()
        argv = [tool("nghttp"), "-v", "--no-dep", "-t", f"{max(1, int(timeout))}s", *_header_args(all_headers), "-d", f.name,
                base_url.rstrip("/") + path]
        cp = subprocess.run(argv, capture_output=True, timeout=timeout + 5)
        r = parse_nghttp_verbose(cp.stdout.decode("utf-8", errors="replace"))
        r.returncode, r.error = cp.returncode, cp.stderr.decode("utf-8", errors="replace").strip()
        if want_body:
            argv = [a for a in argv if a != "-v"]
            cp = subprocess.run(argv, capture_output=True, timeout=timeout + 5)
            r.body = cp.stdout
    return r


def health(base_url: str, service: str = "", timeout: float = 5.0) -> tuple[str | None, Response]:
    """grpc.health.v1.Health/Check: (status name or None, response)."""
    r = call(base_url, HEALTH_PATH, grpc_frame(string_field(1, service.encode()) if service else b""),
             timeout=timeout, want_body=True)
    frames = parse_frames(r.body)
    return (health_status(frames[0][1]) if frames and r.grpc_status == 0 else None), r


# --------------------------------------------------------------------------------------------
# h2load
# --------------------------------------------------------------------------------------------

_H2_REQUESTS_RE = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout")
_H2_STATUS_RE = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")


@dataclasses.dataclass
class H2loadResult:
    total: int = 0
    started: int = 0
    done: int = 0
    succeeded: int = 0
    failed: int = 0
    errored: int = 0
    timeout: int = 0
    status_2xx: int = 0
    status_3xx: int = 0
    status_4xx: int = 0
    status_5xx: int = 0
    returncode: int = 0
    parsed: bool = False
    output: str = ""

    @property
    def all_2xx(self) -> bool:
        return self.parsed and self.total > 0 and self.succeeded == self.total and self.status_2xx == self.total


def parse_h2load(text: str) -> H2loadResult:
    r = H2loadResult(output=text)
    m = _H2_REQUESTS_RE.search(text)
    if m:
        r.total, r.started, r.done, r.succeeded, r.failed, r.errored, r.timeout = (int(x) for x in m.groups())
        r.parsed = True
    m = _H2_STATUS_RE.search(text)
    if m:
        r.status_2xx, r.status_3xx, r.status_4xx, r.status_5xx = (int(x) for x in m.groups())
    else:
        r.parsed = False
    return r


def h2load(url: str, body_path: str, headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
           requests: int = 1, clients: int = 1, timeout: float = 30.0) -> H2loadResult:
    all_headers = list(GRPC_HEADERS.items()) + list(headers.items() if isinstance(headers, Mapping) else headers)
    argv = [tool("h2load"), "-n", str(requests), "-c", str(clients), *_header_args(all_headers), "-d", body_path, url]
    cp = subprocess.run(argv, capture_output=True, timeout=timeout)
    r = parse_h2load(cp.stdout.decode("utf-8", errors="replace") + cp.stderr.decode("utf-8", errors="replace"))
    r.returncode = cp.returncode
    return r
