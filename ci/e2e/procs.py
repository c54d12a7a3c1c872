"""Start and stop the rendered service binaries for end-to-end tests.

Every process gets an explicit environment (the harness's own OTEL_* and service variables are
not inherited), its stdout/stderr go to files in a work directory, and every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "ClientResult",
    "JsonLinesError",
    "LoadSummary",
    "ManagedProcess",
    "ProcessError",
    "build_env",
    "client_supports_load",
    "free_port",
    "peak_rss_kb",
    "read_json_lines",
    "rss_kb",
    "run_client",
    "run_client_load",
    "start_server",
    "wait_for_port",
]

# Variables read by the service binaries: never inherited from the harness's environment.
SERVICE_ENV_VARS = (
    "LISTEN_ADDR",
    "DB_LATENCY_MS",
    "FAILURE_RATE",
    "DRAIN_DELAY_SECS",
    "DRAIN_TIMEOUT_SECS",
    "MAX_CONCURRENT_CALLS",
    "MAX_CONNECTION_AGE_SECS",
    "MAX_MESSAGE_BYTES",
    "SERVER_ADDR",
    "CONNECT_TIMEOUT_SECS",
)

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


class ProcessError(RuntimeError):
    pass


class JsonLinesError(ValueError):
    def __init__(self, path: str, bad: list[tuple[int, str, str]]):
        self.path = path
        self.bad = bad
        shown = "\n".join(f"  line {n}: {err}: {text[:200]!r}" for n, text, err in bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        super().__init__(f"{path}: {len(bad)} line(s) are not valid JSON objects:\n{shown}{more}")


def build_env(overrides: Mapping[str, str] | None = None, inherit: Mapping[str, str] | None = None) -> dict[str, str]:
    """The harness's environment without OTEL_* and the services' own variables, plus
    ``overrides`` (a value of None in overrides removes the variable)."""
    base = dict(os.environ if inherit is None else inherit)
    env = {k: v for k, v in base.items() if not k.startswith("OTEL_") and k not in SERVICE_ENV_VARS}
    for k, v in (overrides or {}).items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = str(v)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _status_field(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (None if the process or the field is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def rss_kb(pid: int) -> int | None:
    """Resident set size (VmRSS) in kB."""
    return _status_field(pid, "VmRSS")


def peak_rss_kb(pid: int) -> int | None:
    """Peak resident set size (VmHWM) in kB."""
    return _status_field(pid, "VmHWM")


def wait_for_port(host: str, port: int, timeout: float = 20.0, proc: "ManagedProcess | None" = None) -> float:
    """Poll until ``host:port`` accepts a TCP connection; returns the seconds it took.
    Fails early if ``proc`` exits meanwhile."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return time.monotonic() - start
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise ProcessError(
                f"{proc.name} exited with {proc.returncode} before {host}:{port} accepted connections\n"
                + proc.tail()
            )
        if time.monotonic() > deadline:
            detail = ("\n" + proc.tail()) if proc is not None else ""
            raise ProcessError(f"{host}:{port} did not accept connections within {timeout}s{detail}")
        time.sleep(0.05)


class ManagedProcess:
    """A child process with stdout/stderr captured to ``<workdir>/<name>.stdout|.stderr``."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        workdir: str | os.PathLike,
        name: str,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.env = dict(env)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cwd = cwd
        self.stdout_path = self.workdir / f"{name}.stdout"
        self.stderr_path = self.workdir / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.killed = False
        self.last_rss_kb: int | None = None
        self.last_peak_rss_kb: int | None = None

    def start(self) -> "ManagedProcess":
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        return self

    # -- state -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int | None:
        v = rss_kb(self.pid) if self.running() else None
        if v is not None:
            self.last_rss_kb = v
        return v

    def peak_rss_kb(self) -> int | None:
        v = peak_rss_kb(self.pid) if self.running() else None
        if v is not None:
            self.last_peak_rss_kb = v
        return v

    # -- stopping --------------------------------------------------------------------------

    def wait(self, timeout: float) -> int:
        """Wait for exit; raises ProcessError (process left running) after ``timeout``."""
        assert self.proc is not None, "not started"
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProcessError(f"{self.name} (pid {self.pid}) still running after {timeout}s") from None
        self.ended_at = self.ended_at or time.monotonic()
        return rc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0, kill_timeout: float = 5.0) -> int:
        """Send ``sig`` and wait up to ``timeout`` s; SIGKILL if it is still running then
        (``self.killed`` is set).  Returns the exit code (negative = killed by a signal)."""
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.rss_kb()
            self.peak_rss_kb()
            self.signal_sent_at = time.monotonic()
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(timeout=kill_timeout)
            self.ended_at = time.monotonic()
        return self.proc.returncode

    def stop_duration_s(self) -> float | None:
        sent = getattr(self, "signal_sent_at", None)
        return None if sent is None or self.ended_at is None else self.ended_at - sent

    def __enter__(self) -> "ManagedProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.running():
            self.stop()

    # -- output ----------------------------------------------------------------------------

    def stdout_text(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stdout_json(self) -> list[dict[str, Any]]:
        return read_json_lines(self.stdout_path)

    def tail(self, lines: int = 20) -> str:
        out = []
        for p in (self.stdout_path, self.stderr_path):
            try:
                text = p.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            out.append(f"--- {p} (last {lines} lines) ---\n" + "\n".join(text))
        return "\n".join(out)

    def describe(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()) if k.startswith(("OTEL_",) + SERVICE_ENV_VARS))
        return f"{env} {shlex.join(self.argv)}"


# --------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------


def read_json_lines(path: str | os.PathLike, require_object: bool = True) -> list[dict[str, Any]]:
    """Parse a file of JSON lines; raise JsonLinesError listing every line that is not valid
    JSON (or not a JSON object).  Empty lines count as invalid; a missing final newline does not."""
    text = Path(path).read_text(errors="replace")
    records: list[dict[str, Any]] = []
    bad: list[tuple[int, str, str]] = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    # A sustained-load stdout is a million lines: with the cyclic GC rescanning the growing list
    # of dicts, parsing takes twice as long (23 s instead of 10 s for 1.1 M lines). Nothing here
    # makes cycles, so it is paused for the loop.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for n, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad.append((n, line, f"invalid JSON ({e.msg} at column {e.colno})"))
                continue
            if require_object and not isinstance(obj, dict):
                bad.append((n, line, f"not an object ({type(obj).__name__})"))
                continue
            records.append(obj)
    finally:
        if gc_was_enabled:
            gc.enable()
    if bad:
        raise JsonLinesError(str(path), bad)
    return records


def check_bunyan_records(records: Iterable[dict[str, Any]]) -> list[str]:
    """Problems with bunyan-format log records: required fields, and trace_id/span_id shape
    where present.  Returns a list of messages (empty = fine)."""
    problems = []
    for i, r in enumerate(records, 1):
        missing = [k for k in ("v", "name", "msg", "level", "time", "pid", "hostname") if k not in r]
        if missing:
            problems.append(f"record {i}: missing {missing}")
        if "trace_id" in r and not HEX32.match(str(r["trace_id"])):
            problems.append(f"record {i}: trace_id {r['trace_id']!r} is not 32 lowercase hex digits")
        if "span_id" in r and not HEX16.match(str(r["span_id"])):
            problems.append(f"record {i}: span_id {r['span_id']!r} is not 16 lowercase hex digits")
        if ("trace_id" in r) != ("span_id" in r):
            problems.append(f"record {i}: has only one of trace_id/span_id")
    return problems


# --------------------------------------------------------------------------------------------
# The rendered binaries
# --------------------------------------------------------------------------------------------


def start_server(
    binary: str | os.PathLike,
    workdir: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    name: str = "server",
    ready_timeout: float = 30.0,
) -> tuple[ManagedProcess, int]:
    """Start the server on ``host:port`` (a free port by default) and wait until it accepts
    connections.  ``env`` is layered over :func:`build_env`.  Returns (process, port)."""
    port = port or free_port(host)
    # A lone server has no clients to turn away on SIGTERM: no drain delay unless ``env`` asks.
    full_env = build_env({"DRAIN_DELAY_SECS": "0", **(env or {}), "LISTEN_ADDR": f"{host}:{port}"})
    p = ManagedProcess([str(binary)], full_env, workdir, name).start()
    try:
        p.ready_after_s = wait_for_port(host, port, ready_timeout, proc=p)
    except Exception:
        p.stop(timeout=5)
        raise
    return p, port


@dataclasses.dataclass
class ClientResult:
    returncode: int
    stdout: str
    stderr: str
    duration_s: float
    result: str | None = None  # "success"
    trace_id: str | None = None
    error: str | None = None  # "CODE: message"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result == "success"


def _parse_client_stdout(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        for key in ("result", "trace_id", "error"):
            if line.startswith(key + ":"):
                out[key] = line[len(key) + 1:].strip()
    return out


def run_client(
    binary: str | os.PathLike,
    server_url: str,
    args: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    workdir: str | os.PathLike | None = None,
    name: str | None = None,
) -> ClientResult:
    """Run the client CLI once (``--server URL`` + ``args``) and parse its stdout.  With
    ``workdir`` and ``name`` its stdout/stderr are also kept as files."""
    argv = [str(binary), "--server", server_url, *[str(a) for a in args]]
    start = time.monotonic()
    try:
        cp = subprocess.run(
            argv, env=build_env(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise ProcessError(f"client did not finish within {timeout}s: {shlex.join(argv)}") from e
    duration = time.monotonic() - start
    if workdir is not None and name is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        (Path(workdir) / f"{name}.stdout").write_text(cp.stdout)
        (Path(workdir) / f"{name}.stderr").write_text(cp.stderr)
    # a failing call prints "error: ..." (on stdout or stderr) and trace_id
    fields = _parse_client_stdout(cp.stdout)
    for k, v in _parse_client_stdout(cp.stderr).items():
        fields.setdefault(k, v)
    return ClientResult(cp.returncode, cp.stdout, cp.stderr, duration, **fields)


def client_supports_load(binary: str | os.PathLike) -> bool:
    """Whether the client has the load mode (``--requests``/``--concurrency``/``--json``)."""
    cp = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30, env=build_env())
    h = cp.stdout + cp.stderr
    return all(flag in h for flag in ("--requests", "--concurrency", "--json"))


@dataclasses.dataclass
class LoadSummary:
    """The ``--json`` summary line of the client's load mode."""

    requests: int
    ok: int
    errors: dict[str, int]
    elapsed_s: float
    throughput_rps: float
    latency_ms: dict[str, float]
    raw: dict[str, Any]
    returncode: int
    duration_s: float

    @classmethod
    def from_json(cls, obj: dict[str, Any], returncode: int, duration_s: float) -> "LoadSummary":
        missing = [k for k in ("requests", "ok", "errors", "elapsed_s", "throughput_rps", "latency_ms") if k not in obj]
        if missing:
            raise ProcessError(f"load summary lacks {missing}: {obj}")
        return cls(
            requests=int(obj["requests"]),
            ok=int(obj["ok"]),
            errors={str(k): int(v) for k, v in (obj["errors"] or {}).items()},
            elapsed_s=float(obj["elapsed_s"]),
            throughput_rps=float(obj["throughput_rps"]),
            latency_ms={str(k): float(v) for k, v in (obj["latency_ms"] or {}).items()},
            raw=obj,
            returncode=returncode,
            duration_s=duration_s,
        )


def run_client_load(
    binary: str | os.PathLike,
    server_url: str,
    requests: int | None = None,
    duration: str | None = None,
    concurrency: int = 1,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    workdir: str | os.PathLike | None = None,
    name: str = "client-load",
    extra_args: Iterable[str] = (),
) -> LoadSummary:
    """Run the client's load mode with ``--json`` and return its summary line.  The summary is
    the last stdout line that parses as a JSON object; other stdout lines are ignored."""
    if (requests is None) == (duration is None):
        raise ValueError("give exactly one of requests= or duration=")
    args = ["--concurrency", str(concurrency), "--json", *extra_args]
    args += ["--requests", str(requests)] if requests is not None else ["--duration", duration]
    r = run_client(binary, server_url, args, env=env, timeout=timeout, workdir=workdir, name=name)
    summary = None
    for line in reversed(r.stdout.splitlines()):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            summary = obj
            break
    if summary is None:
        raise ProcessError(
            f"client load mode printed no JSON summary (exit {r.returncode})\nstdout:\n{r.stdout[-2000:]}\n"
            f"stderr:\n{r.stderr[-2000:]}"
        )
    return LoadSummary.from_json(summary, r.returncode, r.duration_s)
