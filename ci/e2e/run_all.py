#!/usr/bin/env python3
"""Run every end-to-end scenario in sequence against one set of built binaries, each with its
own rotel and OTLP receiver on free ports, and print a table: scenario, verdict, time, key
figures. $PY is the python of $ROTEL_VENV, which has the packages the harness imports
(ci/lib.sh ensure_rotel; README.md); the scenarios run with the same interpreter.

    $PY ci/e2e/run_all.py --bin-dir /tmp/cg-target/release                # ~3 min on 2 cores
    $PY ci/e2e/run_all.py --bin-dir /tmp/cg-target/release --quick        # ~2 min
    $PY ci/e2e/run_all.py --only sigterm,bad-input

The binaries are hard-linked once into <workdir>/bin, so a cargo build during the run cannot
change them between scenarios. Each scenario's output goes to <workdir>/<name>.log (and to this
terminal), its files to <workdir>/<name>/ (result.json holds its figures); the table is also
written to <workdir>/summary.json. Exit status: 0 when every scenario passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import snapshot  # noqa: E402


@dataclasses.dataclass
class Scenario:
    name: str
    script: str
    args: list[str]
    quick_args: list[str]
    timeout: float
    figures: list[str]  # keys of result.json shown in the table ("a.b" = nested)


SCENARIOS = [
    Scenario("whole-grpc", "scenario_whole.py", ["--protocol", "grpc", "--requests", "200", "--concurrency", "8"],
             ["--protocol", "grpc", "--requests", "50"], 240,
             ["requests", "throughput_rps", "latency_ms.p99", "telemetry_complete_after_server_exit_s"]),
    Scenario("whole-http", "scenario_whole.py", ["--protocol", "http/protobuf", "--requests", "200", "--concurrency", "8"],
             ["--protocol", "http/protobuf", "--requests", "50"], 240,
             ["requests", "throughput_rps", "latency_ms.p99", "telemetry_complete_after_server_exit_s"]),
    Scenario("collector-down", "scenario_collector_down.py", [], ["--requests", "3000"], 300,
             ["requests", "rss_kb_idle", "rss_growth_kb_after_part1", "sdk_lines_total", "dropped.spans",
              "single_call_s", "server_stop_s"]),
    Scenario("collector-restart", "scenario_collector_restart.py", [], ["--window", "7", "--post", "100"], 300,
             ["served", "outage_s", "mid_spans_lost", "first_span_received_after_restart_s", "requests_total_metric"]),
    Scenario("sigterm", "scenario_sigterm.py", [], [], 120,
             ["calls", "client_ok", "drain_s", "server_exit_after_sigterm_s", "server_spans", "late_call"]),
    Scenario("sustained", "scenario_sustained.py", ["--duration", "60"], ["--duration", "15"], 400,
             ["concurrency", "throughput_rps", "latency_ms.p50", "latency_ms.p99", "served", "spans_received",
              "spans_dropped_reported", "cpu_s.server"]),
    Scenario("bad-input", "scenario_bad_input.py", [], [], 300,
             ["mutations.sent", "mutations.http_2xx", "mutations.continued", "mutations.new_trace", "special_codes"]),
    Scenario("fleet", "scenario_fleet.py", [], [], 180,
             ["spread_before_sigterm", "sigterm_errors", "drained_replica_spans", "kill_failed",
              "restarted_replicas_called_after_s", "stop_failed", "stop_load_s", "cluster_ip_fourth_called_after_s"]),
    Scenario("python-reference", "scenario_python_reference.py", [], [], 120, ["trace_render_to_reference", "trace_reference_to_render", "spans"]),
    Scenario("tls-grpc", "scenario_tls.py", ["--protocol", "grpc"], ["--protocol", "grpc"], 120,
             ["spans_in_trace", "server_log_records"]),
    Scenario("tls-http", "scenario_tls.py", ["--protocol", "http/protobuf"], ["--protocol", "http/protobuf"], 120,
             ["spans_in_trace", "server_log_records"]),
]
VERDICT = {0: "PASS", 1: "FAIL", 2: "ERROR"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    default_bin = os.environ.get("E2E_BIN_DIR", "/tmp/cg-target/release")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin-dir", default=default_bin, help=f"built binaries (default $E2E_BIN_DIR or {default_bin})")
    p.add_argument("--quick", action="store_true", help="smaller N and shorter windows (a developer's check)")
    p.add_argument("--only", help="comma-separated scenario names (default: all): " + ",".join(s.name for s in SCENARIOS))
    p.add_argument("--workdir", help="default /tmp/e2e-work/all-<time>-<pid>")
    p.add_argument("--quiet", action="store_true", help="do not echo the scenarios' output, only the table")
    a = p.parse_args(argv)
    for b in ("my-service-server", "my-service-client"):
        if not os.access(os.path.join(a.bin_dir, b), os.X_OK):
            p.error(f"{a.bin_dir}/{b} is not an executable (cargo build --release in a render, or pass --bin-dir)")
    names = {s.name for s in SCENARIOS}
    a.selected = [s for s in SCENARIOS if not a.only or s.name in a.only.split(",")]
    unknown = set(a.only.split(",")) - names if a.only else set()
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(names)}")
    a.workdir = Path(a.workdir or f"/tmp/e2e-work/all-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    return a


def dig(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    if isinstance(v, dict):
        # special_codes: count per code
        counts: dict[str, int] = {}
        for x in v.values():
            counts[str(x)] = counts.get(str(x), 0) + 1
        return "/".join(f"{k}:{n}" for k, n in sorted(counts.items()))
    return str(v)


def run_one(s: Scenario, a: argparse.Namespace, bindir: Path) -> dict[str, Any]:
    wd = a.workdir / s.name
    log = a.workdir / f"{s.name}.log"
    argv = [sys.executable, str(HERE / s.script), "--bin-dir", str(bindir), "--no-snapshot", "--workdir", str(wd),
            *(s.quick_args if a.quick else s.args)]
    print(f"\n=== {s.name}: {' '.join(argv[1:])}", flush=True)
    start = time.monotonic()
    timed_out = threading.Event()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def kill_after() -> None:
            try:
                proc.wait(timeout=s.timeout)
            except subprocess.TimeoutExpired:
                timed_out.set()
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)

        threading.Thread(target=kill_after, daemon=True).start()
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            if not a.quiet:
                sys.stdout.write(f"  | {line}")
        rc = proc.wait()
    elapsed = time.monotonic() - start
    try:
        result = json.loads((wd / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        result = {}
    verdict = "TIMEOUT" if timed_out.is_set() else VERDICT.get(rc, f"EXIT {rc}")
    failures = result.get("failures", []) or ([result["could_not_run"]] if "could_not_run" in result else [])
    if verdict != "PASS" and not failures:  # no result.json: the last words of its output
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        failures = [ln for ln in lines if "could not run" in ln][:1] or lines[-1:]
    return {"name": s.name, "verdict": verdict, "exit": rc, "seconds": round(elapsed, 1), "log": str(log),
            "workdir": str(wd), "figures": {k: dig(result, k) for k in s.figures},
            "failures": [f.strip().splitlines()[0] if f.strip() else f for f in failures]}


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    a.workdir.mkdir(parents=True, exist_ok=True)
    bindir = a.workdir / "bin"
    for b in ("my-service-server", "my-service-client"):
        snapshot(os.path.join(a.bin_dir, b), bindir)
    began = time.monotonic()
    rows = []
    try:
        for s in a.selected:
            rows.append(run_one(s, a, bindir))
    finally:
        import shutil

        shutil.rmtree(bindir, ignore_errors=True)
    total = time.monotonic() - began

    print(f"\n{'scenario':<18} {'result':<7} {'time':>6}  key figures")
    for r in rows:
        figs = ", ".join(f"{k}={short(v)}" for k, v in r["figures"].items() if v is not None)
        print(f"{r['name']:<18} {r['verdict']:<7} {r['seconds']:>5.0f}s  {figs}")
        for f in r["failures"][:8]:
            print(f"{'':<34}! {f[:160]}")
    failed = [r["name"] for r in rows if r["verdict"] != "PASS"]
    print(f"\n{len(rows) - len(failed)} of {len(rows)} scenarios passed in {total:.0f}s"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"  (logs: {a.workdir})")
    with open(a.workdir / "summary.json", "w") as f:
        json.dump({"total_s": round(total, 1), "quick": a.quick, "bin_dir": a.bin_dir, "scenarios": rows}, f, indent=2,
                  default=str)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
