"""Run the rotel OpenTelemetry collector for end-to-end tests, in front of the harness's own
OTLP receiver.

rotel (https://github.com/streamfold/rotel) is started in the foreground with its OTLP
receivers (gRPC and HTTP) on chosen or free ports, and its OTLP exporter pointed at an
:class:`otlp_receiver.Receiver` running in this process: the service exports to rotel as it
would to a user's collector, rotel batches and forwards, and the scenarios read the decoded
records (:meth:`Rotel.telemetry`). rotel's own log (stdout) is kept in ``<workdir>/<name>.out``
and returned as :attr:`Telemetry.collector_lines`.

The receiver outlives restarts of rotel, so :meth:`Rotel.telemetry` sees everything forwarded
since the first start. A record counted there was received *and exported* by rotel.
"""

from __future__ import annotations

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from otlp_receiver import (  # noqa: E402,F401 - the records are part of this module's API
    Counts, DataPoint, LogRecord, Receiver, Span, SpanEvent, SpanLink, Telemetry, otel_env)

__all__ = ["DataPoint", "LogRecord", "Rotel", "RotelError", "Span", "SpanEvent", "SpanLink", "Telemetry",
           "find_rotel_agent"]

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class RotelError(RuntimeError):
    pass


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
    """A rotel-agent process in the foreground exporting over OTLP/gRPC to :attr:`receiver`,
    its stdout (rotel's own log) appended to ``<workdir>/<name>.out`` and its stderr to
    ``<workdir>/<name>.err``. Usable as a context manager (start on enter, close on exit)."""

    def __init__(self, workdir: str | os.PathLike, grpc_port: int | None = None, http_port: int | None = None,
                 host: str = "127.0.0.1", name: str = "rotel", receiver: Receiver | None = None,
                 extra_args: Iterable[str] = (), agent: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.grpc_port = grpc_port or free_port(host)
        self.http_port = http_port or free_port(host)
        while self.http_port == self.grpc_port:
            self.http_port = free_port(host)
        self.name = name
        self.receiver = receiver or Receiver(host, http_port=None)
        self.extra_args = list(extra_args)
        self.agent = agent or find_rotel_agent()
        self.output_path = self.workdir / f"{name}.out"
        self.stderr_path = self.workdir / f"{name}.err"
        self.pid_file = self.workdir / f"{name}.pid"
        self.log_file = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    # -- endpoints -------------------------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def otel_env(self, protocol: str = "grpc") -> dict[str, str]:
        """OTEL_EXPORTER_OTLP_* variables pointing an SDK at this collector."""
        return otel_env(protocol, self.grpc_endpoint, self.http_endpoint)

    def command(self) -> list[str]:
        return [
            self.agent, "start",
            "--otlp-grpc-endpoint", f"{self.host}:{self.grpc_port}",
            "--otlp-http-endpoint", f"{self.host}:{self.http_port}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", self.receiver.grpc_endpoint,
            "--otlp-exporter-protocol", "grpc",
            "--otlp-exporter-compression", "none",  # loopback: gzip would only cost CPU on both sides
            # only used with --daemon, but keep parallel instances off the shared /tmp defaults
            "--pid-file", str(self.pid_file),
            "--log-file", str(self.log_file),
            *self.extra_args,
        ]

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
        if not self.receiver.running():
            self.receiver.start()
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

    def restart(self, timeout: float = 20.0, stop_timeout: float = 10.0) -> "Rotel":
        self.stop(stop_timeout)
        return self.start(timeout)

    def __enter__(self) -> "Rotel":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop rotel, then the receiver (what it received stays readable)."""
        try:
            self.stop()
        finally:
            self.receiver.stop()

    # -- output ----------------------------------------------------------------------------

    def tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.output_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            chunks.append(f"--- {path} (last {lines} lines) ---\n" + ANSI_RE.sub("", "\n".join(text)))
        return "\n".join(chunks)

    def collector_lines(self) -> list[str]:
        """rotel's own log so far (complete lines, ANSI colours removed)."""
        try:
            data = self.output_path.read_bytes()
        except FileNotFoundError:
            return []
        text = data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace")
        return [ANSI_RE.sub("", ln) for ln in text.splitlines() if ln.strip()]

    def telemetry(self) -> Telemetry:
        """Everything rotel forwarded so far (see :meth:`Receiver.telemetry`), with
        :attr:`Telemetry.collector_lines` read afresh."""
        t = self.receiver.telemetry()
        t.collector_lines = self.collector_lines()
        return t

    def wait_for(self, predicate: Callable[[Telemetry], bool], timeout: float = 30.0, interval: float = 0.25,
                 what: str = "telemetry") -> Telemetry:
        """Poll until ``predicate(telemetry)`` holds; TimeoutError (with the last summary) after
        ``timeout`` seconds, RotelError if rotel exits meanwhile."""
        def alive() -> None:
            if self.proc is not None and self.proc.poll() is not None:
                raise RotelError(f"{self.name} exited ({self.proc.returncode}) while waiting for {what}")

        self.receiver.wait_for(predicate, timeout, interval, what, alive)
        return self.telemetry()
