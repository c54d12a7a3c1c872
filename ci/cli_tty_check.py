#!/usr/bin/env python3
"""The client CLI as a person sees it: run under a pseudo-terminal (Python's pty), with no collector
listening, against a real server. Checks that

- on a terminal its lines are readable (level, message, trace_id/span_id), not JSON, and the SDK's
  export failures are said once, with what failed, after the answer;
- it exits within about a second of its answer although the collector is down;
- `--log-format json` (and a pipe instead of a terminal) keeps bunyan JSON lines;
- load mode's summary has no diagnostics inside it; dropped spans come after it, counted, with
  what to do ("N spans dropped: queue full at this rate; raise OTEL_BSP_MAX_QUEUE_SIZE ...").

    $ROTEL_VENV/bin/python ci/cli_tty_check.py --bin-dir DIR [--service my-service]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))

import procs  # noqa: E402

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
DEAD_COLLECTOR = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{procs.free_port()}",
                  "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}


def run_in_pty(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str, float, float | None]:
    """(exit code, what the terminal showed, seconds in all, seconds from the answer's
    trace_id line to the exit)."""
    start = time.monotonic()
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdin, stdout and stderr are the terminal
        try:
            os.execve(argv[0], argv, env)
        finally:
            os._exit(127)
    out, answered = b"", None
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, start + timeout - time.monotonic()))
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if answered is None and b"trace_id: " in out:
            answered = time.monotonic()
    _, status = os.waitpid(pid, 0)
    end = time.monotonic()
    os.close(fd)
    text = ANSI.sub("", out.decode(errors="replace").replace("\r\n", "\n"))
    return os.waitstatus_to_exitcode(status), text, end - start, None if answered is None else end - answered


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--service", default="my-service")
    p.add_argument("--max-exit-after-answer", type=float, default=1.5,
                   help="seconds allowed from the answer to the exit (default 1.5: ~1 s and CI noise)")
    a = p.parse_args(argv)
    client = os.path.join(a.bin_dir, f"{a.service}-client")
    workdir = tempfile.mkdtemp(prefix="cli-tty-")
    problems: list[str] = []

    def expect(ok: bool, what: str, shown: str) -> None:
        print(f"{'ok' if ok else 'FAIL'}: {what}")
        if not ok:
            problems.append(what)
            print("    " + shown.replace("\n", "\n    "))

    server, port = procs.start_server(os.path.join(a.bin_dir, f"{a.service}-server"), workdir,
                                      {**DEAD_COLLECTOR, "FAILURE_RATE": "0", "OTEL_SDK_DISABLED": "true"})
    url = f"http://127.0.0.1:{port}"
    env = procs.build_env({**DEAD_COLLECTOR, "TERM": "xterm"})
    try:
        code, text, _, after = run_in_pty([client, "--server", url, "--id", "tty-1"], env)
        expect(code == 0 and "result: success" in text, "one call on a terminal succeeds", text)
        expect('{"v":0' not in text and "{\"" not in text, "no JSON lines on a terminal", text)
        expect(bool(re.search(r"^\s*INFO .*trace_id=[0-9a-f]{32} span_id=[0-9a-f]{16}", text, re.M)),
               "readable lines: level, message, trace_id and span_id", text)
        delivered = [ln for ln in text.splitlines() if "could not be delivered" in ln]
        expect(len(delivered) == 1, "the collector being down is said once", text)
        expect(any("Connection refused" in ln or "timing out" in ln for ln in delivered),
               "the line says what failed", text)
        expect(after is not None and after <= a.max_exit_after_answer,
               f"exits within {a.max_exit_after_answer} s of its answer (took {after and round(after, 2)} s)", text)

        code, text, _, _ = run_in_pty([client, "--server", url, "--id", "tty-2", "--log-format", "json"], env)
        expect(code == 0 and '{"v":0' in text, "--log-format json keeps bunyan JSON on a terminal", text)

        r = procs.run_client(client, url, ["--id", "pipe-1"], DEAD_COLLECTOR, timeout=30)
        expect('{"v":0' in r.stderr and " INFO " not in r.stderr, "a pipe gets bunyan JSON", r.stderr)

        load_env = {**env, "OTEL_BSP_MAX_QUEUE_SIZE": "16", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16"}
        code, text, _, _ = run_in_pty([client, "--server", url, "--requests", "400", "--concurrency", "8"],
                                      load_env)
        lines = [ln.split("\r")[-1] for ln in text.splitlines()]
        summary_at = next((i for i, ln in enumerate(lines) if ln.startswith("requests: ")), None)
        expect(code == 0 and summary_at is not None, "load mode prints its summary", text[-2000:])
        if summary_at is not None:
            summary = lines[summary_at:summary_at + 2]
            expect(summary[1].startswith("latency ms:"), "the summary's lines come together, no diagnostic between",
                   "\n".join(lines[summary_at:]))
            after_summary = "\n".join(lines[summary_at + 2:])
            expect(bool(re.search(r"\d+ spans dropped: queue full at this rate; raise OTEL_BSP_MAX_QUEUE_SIZE "
                                  r"or lower the rate", after_summary)),
                   "dropped spans are counted after the summary", after_summary)
            before = "\n".join(lines[:summary_at])
            expect("opentelemetry" not in before and "dropped" not in before,
                   "no SDK diagnostic before the summary", before[-1500:])
        expect(" calls " in text, "load mode shows progress on a terminal", text[:500])
    finally:
        server.stop(timeout=10)
    print("cli tty check: " + ("passed" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
