#!/usr/bin/env python3
"""Runs the demo's run half (ci/demo.py) on built binaries and checks what a person would look
for in its output, not its exact text: the successful call's trace as a tree of the four spans
(client -> server -> business logic -> database query, each one level deeper, with a duration),
the service's own three metrics with values, and log records whose trace and span ids are shown beside a
JSON line with the same ids.

    $ROTEL_VENV/bin/python ci/demo_check.py --bin-dir DIR [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TREE = ["grpc.client.ProcessRequest", "grpc.server.ProcessRequest", "process-business-logic", "database-query"]
OWN_METRICS = ["requests.total", "request.duration", "requests.active"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check(text: str) -> list[str]:
    problems = []
    lines = [ANSI.sub("", ln) for ln in text.splitlines()]
    # the trace of the call that succeeded: its section, up to the next heading
    start = next((i for i, ln in enumerate(lines) if ln.startswith("== trace ") and "succeeds" in ln), None)
    if start is None:
        return ["no '== trace ... succeeds' section"] + lines[-20:]
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("== ")), len(lines))
    section = lines[start + 1:end]
    depth = -1
    for name in TREE:
        row = next((ln for ln in section if re.search(rf"(^|[└├]─ ){re.escape(name)} \[", ln.strip())), None)
        if row is None:
            problems.append(f"the trace tree lacks {name}")
            continue
        indent = len(row) - len(row.lstrip(" │"))
        if indent <= depth:
            problems.append(f"{name} is not nested under the span before it: {row!r}")
        depth = indent
        if not re.search(r"\d+(\.\d+)? ms", row):
            problems.append(f"{name} shows no duration: {row!r}")
    if not any("request.id=demo-42" in ln for ln in section):
        problems.append("the trace tree shows no request.id attribute")
    metrics = [ln for ln in lines if re.search(r"\(\w+(, [^)]*)?\) = ", ln)]
    for m in OWN_METRICS:
        if not any(re.search(rf"\.{re.escape(m)} \(", ln) for ln in metrics):
            problems.append(f"no value shown for the metric *.{m}")
    # A client's endpoints.ready of 0 after calls that succeeded is its exit flush: said so, or wrong.
    for ln in metrics:
        if re.search(r"\.endpoints\.ready \(.*\) = 0(\s|$)", ln) and "as the client exited" not in ln:
            problems.append(f"endpoints.ready shown as 0 without saying it was recorded at exit: {ln!r}")
    trace_id = re.search(r"== trace ([0-9a-f]{32})", lines[start]).group(1)
    correlated = 0
    for i, ln in enumerate(lines[:-1]):
        ids = re.search(r"OTLP log record\s*: trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})", ln)
        if ids and ids.group(1) == trace_id and f'"trace_id":"{ids.group(1)}"' in lines[i + 1] \
                and f'"span_id":"{ids.group(2)}"' in lines[i + 1]:
            correlated += 1
    if correlated < 3:
        problems.append(f"{correlated} log records of the successful call shown beside their JSON line (want >= 3)")
    return problems


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin-dir", required=True)
    p.add_argument("--workdir")
    p.add_argument("--service", default="my-service", help="binary prefix (default my-service)")
    a = p.parse_args(argv)
    workdir = a.workdir or tempfile.mkdtemp(prefix="demo-check-")
    cmd = [sys.executable, os.path.join(HERE, "demo.py"),
           "--server-bin", os.path.join(a.bin_dir, f"{a.service}-server"),
           "--client-bin", os.path.join(a.bin_dir, f"{a.service}-client"), "--workdir", workdir]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    print(run.stdout)
    problems = check(run.stdout) if run.returncode == 0 else [f"demo.py exited {run.returncode}:\n{run.stderr}"]
    for problem in problems:
        print(f"FAIL: {problem}")
    print("demo check: " + ("passed" if not problems else f"{len(problems)} problems"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
