"""What scenarios 2-6 share: their command-line basics, a run object that owns the work
directory, the figures, the checks and every process it started (so all of them are stopped
whatever happens), bounded polling, and readers for the server's JSON stdout.

Exit status of every scenario: 0 all checks passed, 1 a check failed (each failure listed),
2 the scenario could not run (a process did not start, rotel died, a setup wait timed out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import procs  # noqa: E402
from checks import Checks, dump_json  # noqa: E402
from otlp_receiver import Receiver  # noqa: E402
from rotel import Rotel, RotelError  # noqa: E402

T = TypeVar("T")

SERVER_SPAN = "grpc.server.ProcessRequest"
CLIENT_SPAN = "grpc.client.ProcessRequest"
ATTEMPT_SPAN = "grpc.client.attempt.ProcessRequest"
LOGIC_SPAN = "process-business-logic"
DB_SPAN = "database-query"
# Targets whose WARN/ERROR lines the telemetry crate rate-limits (subscriber.rs TRANSPORT_TARGETS)
SDK_TARGET_RE = re.compile(r"^(opentelemetry|h2|hyper|tonic|tower|reqwest|rustls)([_:-]|$)")
PROCESSING_RE = re.compile(r"Processing request: (.*)\Z", re.S)


class CouldNotRun(RuntimeError):
    """Setup failed: the scenario exits 2 (not a verdict on the service)."""


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def base_parser(doc: str) -> argparse.ArgumentParser:
    default_bin = os.environ.get("E2E_BIN_DIR", "/tmp/cg-target/release")
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog="\n\n".join(doc.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=default_bin,
                   help=f"directory of the built binaries (default $E2E_BIN_DIR or {default_bin})")
    p.add_argument("--server-bin", help="server binary (default <bin-dir>/my-service-server)")
    p.add_argument("--client-bin", help="client binary (default <bin-dir>/my-service-client)")
    p.add_argument("--workdir", help="where logs, outputs and result.json go (default /tmp/e2e-work/<scenario>-<time>-<pid>)")
    p.add_argument("--no-snapshot", action="store_true",
                   help="run the binaries in place instead of hard-linking them into <workdir>/bin first")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra server environment, applied last (repeatable): also how to break a run on purpose")
    p.add_argument("--client-env", action="append", default=[], metavar="KEY=VALUE", help="extra client environment (repeatable)")
    return p


def finish_args(p: argparse.ArgumentParser, a: argparse.Namespace, name: str) -> argparse.Namespace:
    a.server_bin = a.server_bin or os.path.join(a.bin_dir, "my-service-server")
    a.client_bin = a.client_bin or os.path.join(a.bin_dir, "my-service-client")
    for b in (a.server_bin, a.client_bin):
        if not os.access(b, os.X_OK):
            p.error(f"{b} is not an executable (build the rendered workspace with --release, or pass --bin-dir)")
    if not a.workdir:
        a.workdir = f"/tmp/e2e-work/{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    try:
        a.server_env_extra = kv_list(a.server_env)
        a.client_env_extra = kv_list(a.client_env)
    except ValueError as e:
        p.error(str(e))
    return a


def kv_list(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ValueError(f"expected KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def snapshot(binary: str, bindir: Path) -> str:
    """Hard-link (same filesystem) or copy ``binary`` into ``bindir``: cargo replaces its outputs
    by writing new files, so the snapshot keeps the inode this run started with."""
    bindir.mkdir(parents=True, exist_ok=True)
    dest = bindir / os.path.basename(binary)
    if dest.exists():
        dest.unlink()
    try:
        os.link(binary, dest)
    except OSError:
        shutil.copy2(binary, dest)
    return str(dest)


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


def poll_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
               alive: Iterable[procs.ManagedProcess] = ()) -> T:
    """Call ``predicate`` until it returns something truthy (returned); TimeoutError after
    ``timeout`` s; CouldNotRun if a process of ``alive`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for p in alive:
            if p.poll() is not None:
                raise CouldNotRun(f"{p.name} exited ({p.returncode}) while waiting for {what}\n{p.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {timeout}s")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# The server's stdout (bunyan JSON lines)
# --------------------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete lines of ``path`` that are JSON objects (tolerant: for polling while the
    process writes; the final verdict uses procs.read_json_lines, which is strict)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in data[: data.rfind(b"\n") + 1].decode("utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def processed_ids(records: Iterable[dict[str, Any]], prefix: str = "") -> list[str]:
    """Request ids of the server's ``Processing request: <id>`` lines (those starting with
    ``prefix``)."""
    out = []
    for r in records:
        m = PROCESSING_RE.search(str(r.get("msg", "")))
        if m and m.group(1).startswith(prefix):
            out.append(m.group(1))
    return out


def level(r: dict[str, Any]) -> int:
    v = r.get("level")
    return v if isinstance(v, int) else 0


def sdk_problems(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """WARN/ERROR lines from the SDK and transport targets (what a dead collector produces)."""
    return [r for r in records if level(r) >= 40 and SDK_TARGET_RE.match(str(r.get("target", "")))]


def callsite(r: dict[str, Any]) -> str:
    return f"{r.get('target')} {r.get('file', '?')}:{r.get('line', '?')}"


def bunyan_time(r: dict[str, Any]) -> float | None:
    """Seconds since the epoch of a bunyan ``time`` (RFC 3339 with nanoseconds, Z)."""
    m = re.match(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?Z$", str(r.get("time", "")))
    if not m:
        return None
    import calendar

    y, mo, d, h, mi, s = (int(x) for x in m.groups()[:6])
    frac = float("0." + m.group(7)) if m.group(7) else 0.0
    return calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + frac


def repeats_within(records: Iterable[dict[str, Any]], window_s: float) -> list[str]:
    """Callsites that wrote two lines less than ``window_s`` apart (the telemetry crate admits
    one SDK/transport warning per callsite per 60 s)."""
    last: dict[str, float] = {}
    out = []
    for r in records:
        t = bunyan_time(r)
        if t is None:
            continue
        key = callsite(r)
        if key in last and t - last[key] < window_s:
            out.append(f"{key} again after {t - last[key]:.1f}s: {r.get('msg')!r}")
        last[key] = t
    return out


def dropped_counts(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """What the SDK surfaced about full queues: ``spans``/``logs`` totals from the shutdown
    warnings (``dropped_span_count``, ``dropped_logs_count``), and ``*_dropping_started`` = 1 when
    the first-drop warning was written."""
    out: dict[str, int] = {}
    for r in records:
        msg = str(r.get("msg", ""))
        if "dropped_span_count" in r:
            out["spans"] = out.get("spans", 0) + int(r["dropped_span_count"])
        if "dropped_logs_count" in r:
            out["logs"] = out.get("logs", 0) + int(r["dropped_logs_count"])
        if "dropped a Span due to queue full" in msg:
            out["spans_dropping_started"] = 1
        if "dropped a LogRecord due to queue full" in msg:
            out["logs_dropping_started"] = 1
    return out


def panics(*texts: str) -> list[str]:
    return [ln.strip()[:300] for t in texts for ln in t.splitlines() if "panicked" in ln]


# --------------------------------------------------------------------------------------------
# A client load run in the background
# --------------------------------------------------------------------------------------------


class BackgroundLoad:
    """The client's load mode as a background process; :meth:`result` waits (bounded) and
    parses its ``--json`` summary."""

    def __init__(self, binary: str, url: str, workdir: Path, name: str, env: Mapping[str, str],
                 concurrency: int, requests: int | None = None, duration: str | None = None,
                 id_prefix: str | None = None) -> None:
        argv = [binary, "--server", url, "--concurrency", str(concurrency), "--json"]
        argv += ["--requests", str(requests)] if requests is not None else ["--duration", str(duration)]
        if id_prefix is not None:
            argv += ["--id", id_prefix]
        self.proc = procs.ManagedProcess(argv, procs.build_env(env), workdir, name)

    def start(self) -> "BackgroundLoad":
        self.proc.start()
        return self

    def result(self, timeout: float) -> procs.LoadSummary:
        try:
            rc = self.proc.wait(timeout)
        except procs.ProcessError:
            self.proc.stop(signal.SIGKILL, timeout=5)
            raise CouldNotRun(f"{self.proc.name} did not finish within {timeout}s") from None
        duration = (self.proc.ended_at or time.monotonic()) - (self.proc.started_at or 0)
        for line in reversed(self.proc.stdout_text().splitlines()):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return procs.LoadSummary.from_json(obj, rc, duration)
        raise CouldNotRun(f"{self.proc.name} printed no JSON summary (exit {rc})\n{self.proc.tail()}")


def load_problems(summary: procs.LoadSummary, expected: int | None = None) -> list[str]:
    """Why a load run is not "every call OK" (empty = fine)."""
    out = []
    if summary.returncode != 0:
        out.append(f"client exited {summary.returncode}")
    if summary.errors:
        out.append(f"errors {summary.errors}")
    if summary.ok != summary.requests:
        out.append(f"ok {summary.ok} of {summary.requests}")
    if expected is not None and summary.requests != expected:
        out.append(f"{summary.requests} calls made, {expected} asked")
    return out


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class Run:
    """One scenario run: work directory, binaries snapshot, figures, checks, and every rotel,
    receiver and process started through it (stopped in :meth:`close`)."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args = args
        self.name = name
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.began = time.monotonic()
        self.figures: dict[str, Any] = {"scenario": name, "workdir": str(self.workdir)}
        self.checks = Checks()
        self.rotels: list[Rotel] = []
        self.receivers: list[Receiver] = []
        self.processes: list[procs.ManagedProcess] = []
        self.server_bin = args.server_bin
        self.client_bin = args.client_bin
        if not args.no_snapshot:
            self.server_bin = snapshot(args.server_bin, self.workdir / "bin")
            self.client_bin = snapshot(args.client_bin, self.workdir / "bin")

    # -- processes -------------------------------------------------------------------------

    def rotel(self, name: str = "rotel", **kw: Any) -> Rotel:
        """rotel in front of a receiver of its own (rotel.py)."""
        r = Rotel(self.workdir, name=name, **kw)
        self.rotels.append(r)
        return r

    def receiver(self, **kw: Any) -> Receiver:
        """The OTLP receiver alone, for the service to export to directly (otlp_receiver.py)."""
        r = Receiver(**kw)
        self.receivers.append(r)
        return r

    def start_server(self, env: Mapping[str, str], name: str = "server") -> tuple[procs.ManagedProcess, int]:
        """The server with ``env`` + ``--server-env`` (the latter wins), on a free port."""
        full = {"FAILURE_RATE": "0", **env, **self.args.server_env_extra}
        p, port = procs.start_server(self.server_bin, self.workdir, full, name=name)
        self.processes.append(p)
        return p, port

    def client_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Client environment: telemetry off and RUST_LOG=warn unless ``env`` says otherwise
        (the client is the load generator here, not under test; at INFO it writes a JSON line
        per call on stderr), then ``--client-env``."""
        return {"OTEL_SDK_DISABLED": "true", "RUST_LOG": "warn", **(env or {}), **self.args.client_env_extra}

    def load(self, url: str, name: str, concurrency: int, requests: int | None = None,
             duration: str | None = None, id_prefix: str | None = None,
             env: Mapping[str, str] | None = None) -> BackgroundLoad:
        bg = BackgroundLoad(self.client_bin, url, self.workdir, name, self.client_env(env), concurrency,
                            requests=requests, duration=duration, id_prefix=id_prefix)
        self.processes.append(bg.proc)
        return bg.start()

    def close(self) -> None:
        for p in self.processes:
            if p.running():
                p.stop(timeout=5)
        for r in self.rotels + self.receivers:
            try:
                r.close() if isinstance(r, Rotel) else r.stop()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print(f"  (stopping {r}: {e})", file=sys.stderr)
        if not self.args.no_snapshot:
            shutil.rmtree(self.workdir / "bin", ignore_errors=True)

    # -- result ----------------------------------------------------------------------------

    def finish(self, title: str) -> int:
        self.figures["total_s"] = round(time.monotonic() - self.began, 2)
        self.figures["failures"] = self.checks.failures
        self.figures["passed"] = self.checks.ok
        dump_json(self.workdir / "result.json", self.figures)
        print("\nfigures")
        for k, v in self.figures.items():
            if k not in ("failures", "passed"):
                print(f"  {k}: {json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}")
        return self.checks.report(title)

    def could_not_run(self, title: str, error: BaseException) -> int:
        print(f"\n{title}: could not run: {error}", file=sys.stderr)
        for r in self.rotels:
            if r.proc is not None and r.proc.poll() is not None:
                print(r.tail(), file=sys.stderr)
        self.figures["total_s"] = round(time.monotonic() - self.began, 2)
        self.figures["could_not_run"] = str(error)
        self.figures["passed"] = False
        dump_json(self.workdir / "result.json", self.figures)
        return 2


SETUP_ERRORS = (procs.ProcessError, RotelError, CouldNotRun, OSError)


def main_wrapper(run: Run, title: str, body: Callable[[Run], None]) -> int:
    """Run ``body`` and turn the outcome into the exit status; always stops what it started."""
    try:
        try:
            body(run)
        except SETUP_ERRORS as e:
            return run.could_not_run(title, e)
        except TimeoutError as e:
            return run.could_not_run(title, e)
    finally:
        run.close()
    return run.finish(title)


def server_stdout_checks(c: Checks, server: procs.ManagedProcess) -> list[dict[str, Any]]:
    """Every stdout line is a JSON object, nothing panicked; returns the records."""
    try:
        records = server.stdout_json()
        c.check(True, f"every server stdout line is a JSON object ({len(records)} lines)")
    except procs.JsonLinesError as e:
        c.check(False, "every server stdout line is a JSON object", str(e).splitlines()[0] + " " + str(e.bad[0][2]))
        records = read_records(server.stdout_path)
    c.empty(panics(server.stdout_text(), server.stderr_text()), "no 'panicked' in the server's output")
    return records
