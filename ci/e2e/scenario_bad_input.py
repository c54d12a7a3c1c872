#!/usr/bin/env python3
"""Scenario 6, "bad input": hostile headers, messages and configuration never break the
service.

Part A, one server (DB_LATENCY_MS=0) exporting to rotel (detailed traces and metrics):
1. a few hundred mutated traceparent / tracestate / baggage headers (mutations.py: truncations,
   wrong lengths, uppercase, non-hex, huge values, random header-legal bytes; deterministic),
   each in its own h2load request whose MyRequest id names it (hdr-<nnn>). Expected: HTTP 2xx
   (h2load's status counts), and a server span with rpc.status_code OK whose parent is the
   given one exactly when the traceparent is well-formed (no span when well-formed and
   unsampled), else a new trace. One mutation exceeds the server's 16 KiB header list limit and
   must be refused at the HTTP/2 layer (4xx), not crash anything;
2. hand-made messages through nghttp, which shows the gRPC status: empty id ->
   INVALID_ARGUMENT; a message over MAX_MESSAGE_BYTES (4 MiB) -> RESOURCE_EXHAUSTED; invalid
   UTF-8 in the string field, a wrong wire type, a truncated field, a compressed flag without
   grpc-encoding, a length prefix longer than the body, no message at all -> INTERNAL (tonic's
   decode errors); an unknown method -> UNIMPLEMENTED (span named grpc.server._OTHER); ids
   with quotes, newlines, backslashes, NUL, ANSI escapes, JSON, unicode, 64 KiB -> OK, and the
   server's "Processing request" line carries the id exactly; an id just under the 4 MiB limit
   -> OK, and its span and those of the 10 calls after it still reach rotel (no export fails);
3. the client CLI with --id '' (INVALID_ARGUMENT, exit 1) and an id with quotes and a newline;
4. afterwards: the server is alive, the health check answers SERVING, no "panicked" anywhere,
   every stdout line is JSON, each status code's count in rpc.server.call.duration matches what
   was sent, the SDK's own warnings about bad headers are rate-limited, and SIGTERM still gives
   exit 0.

Part B, bad OTEL_* values, one fresh server each (unknown protocol, endpoint without scheme,
negative OTEL_METRIC_EXPORT_INTERVAL, malformed OTEL_EXPORTER_OTLP_HEADERS entry, several with
secrets): exactly one WARN line per bad value, target "telemetry", naming the variable; no
header value ever printed (stdout or stderr); a call succeeds; where the fallback still points
at rotel, its span arrives; exit 0 on SIGTERM.

    $PY ci/e2e/scenario_bad_input.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_bad_input.py --server-env MAX_MESSAGE_BYTES=100000000       # must FAIL
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import h2  # noqa: E402
import mutations  # noqa: E402
import procs  # noqa: E402
from common import SERVER_SPAN, Run  # noqa: E402
from rotel import Telemetry  # noqa: E402

TITLE = "scenario bad-input"
SERVICE = "e2e-bad-server"
TELEMETRY_MAX_CHARS = 256  # telemetry::MAX_VALUE_CHARS: longer caller values are cut in telemetry
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SECRET = "TOPSECRET"
NEAR_LIMIT_PREFIX = "near-limit-"
CANARIES = 10

F, R = h2.grpc_frame, h2.my_request
# name -> (body, expected code, id the server should log, or None when the handler never runs)
WEIRD_IDS = {
    "quote": 'say "hi"',
    "newline": "line1\nline2",
    "crlf": "a\r\nb",
    "backslash": "back\\slash\\",
    "tab": "tab\there",
    "nul": "nul\x00byte",
    "ansi": "\x1b[31mred\x1b[0m",
    "json": '{"level":50,"msg":"fake"}',
    "unicode": "caf\u00e9-\u2028-\U0001F680",
    "format": "%s%n%x{}{0}",
    "big-64k": "b" * 65536,
}


def special_cases() -> list[tuple[str, bytes, str, str | None]]:
    cases: list[tuple[str, bytes, str, str | None]] = [
        ("empty-id", F(R(b"")), "INVALID_ARGUMENT", ""),
        ("oversize", F(R(b"x" * (MAX_MESSAGE_BYTES + 1024))), "RESOURCE_EXHAUSTED", None),
        ("invalid-utf8", F(R(b"bad-\xff\xfe")), "INTERNAL", None),
        ("invalid-utf8-truncated", F(R(b"abc\xc3")), "INTERNAL", None),
        ("invalid-utf8-surrogate", F(R(b"\xed\xa0\x80")), "INTERNAL", None),
        ("wrong-wire-type", F(b"\x08\x01"), "INTERNAL", None),
        ("truncated-field", F(b"\x0a\x10abc"), "INTERNAL", None),
        ("compressed-flag", F(R(b"special-compressed"), compressed=True), "INTERNAL", None),
        ("length-prefix-too-long", F(R(b"special-short"), declared_length=100), "INTERNAL", None),
        ("no-message", b"", "INTERNAL", None),
        ("unknown-field", F(b"\x12\x03abc" + R(b"special-unknown-field")), "OK", "special-unknown-field"),
    ]
    for name, ident in WEIRD_IDS.items():
        cases.append((f"id-{name}", F(R(ident.encode())), "OK", ident))
    return cases


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--seed", type=int, default=20261123, help="mutation seed (default fixed)")
    p.add_argument("--limit", type=int, default=0, help="send only the first N mutations (0 = all)")
    p.add_argument("--parallel", type=int, default=4, help="h2load processes at once (default 4)")
    p.add_argument("--skip-otel", action="store_true", help="skip part B (bad OTEL_* values)")
    p.add_argument("--telemetry-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "bad-input")


# --------------------------------------------------------------------------------------------
# Part A
# --------------------------------------------------------------------------------------------


def send_mutations(run: Run, base: str, muts: list[mutations.Mutation], parallel: int):
    bodies = run.workdir / "bodies"
    bodies.mkdir(exist_ok=True)

    def one(i_m):
        i, m = i_m
        ident = f"hdr-{i:03d}"
        path = bodies / f"{ident}.bin"
        path.write_bytes(F(R(ident.encode())))
        return ident, m, h2.h2load(base + h2.PROCESS_PATH, str(path), m.headers, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(one, enumerate(muts)))


def check_mutations(c, f, t: Telemetry, sent) -> None:
    spans = {}
    for s in t.find_spans(SERVER_SPAN, "SERVER", SERVICE):
        ident = str(s.attributes.get("request.id", ""))
        if ident.startswith("hdr-"):
            spans.setdefault(ident, []).append(s)
    normal = [(i, m, r) for i, m, r in sent if not m.oversize]
    over = [(i, m, r) for i, m, r in sent if m.oversize]
    c.empty([f"{i} {m.name}: {r.succeeded}/{r.total} succeeded, 2xx={r.status_2xx} 4xx={r.status_4xx} "
             f"5xx={r.status_5xx} (exit {r.returncode})" for i, m, r in normal if not r.all_2xx],
            f"every one of {len(normal)} mutated-header requests got HTTP 2xx (h2load)")
    c.empty([f"{i} {m.name}: {r.output[-200:]!r}" for i, m, r in over if r.status_4xx != 1],
            "the header list over the server's 16 KiB limit is refused with HTTP 4xx")
    expect_span = [(i, m) for i, m, r in normal if m.expect is None or m.expect.sampled]
    c.empty([f"{i} {m.name}" for i, m in expect_span if len(spans.get(i, [])) != 1],
            "every sampled mutated request has exactly one server span")
    c.empty([f"{i} {m.name}: {s.attributes.get('rpc.status_code')}" for i, m in expect_span for s in spans.get(i, [])
             if s.attributes.get("rpc.status_code") != "OK"], "their rpc.status_code is OK")
    unsampled = [(i, m) for i, m, r in normal if m.expect is not None and not m.expect.sampled]
    c.empty([f"{i} {m.name}" for i, m in unsampled if spans.get(i)],
            f"no span for the {len(unsampled)} well-formed unsampled traceparents (parent-based sampling)")
    wrong = []
    for i, m in expect_span:
        for s in spans.get(i, []):
            e = m.expect
            if e is None:
                continue
            if e.parent and (s.trace_id != e.trace_id or s.parent_span_id != e.parent_id):
                wrong.append(f"{i} {m.name}: expected parent {e.trace_id}/{e.parent_id}, got {s.trace_id}/{s.parent_span_id}")
            if not e.parent and s.parent_span_id is not None:
                wrong.append(f"{i} {m.name}: expected a new trace, got parent {s.trace_id}/{s.parent_span_id} "
                             f"from {m.headers[0][1][:80]!r}")
    c.empty(wrong, "well-formed traceparents are continued, every other one starts a new trace")
    # reported, not checked: what became of tracestate values W3C calls invalid
    kept = {}
    for i, m, r in normal:
        if m.name.startswith("tracestate/") and m.name != "tracestate/valid":
            for s in spans.get(i, []):
                if s.trace_state:
                    kept[m.name] = len(s.trace_state)
    f["tracestate_kept_on_server_span"] = kept
    f["mutations"] = {
        "sent": len(sent), "http_2xx": sum(r.status_2xx for _, _, r in sent),
        "http_4xx": sum(r.status_4xx for _, _, r in sent),
        "continued": sum(1 for i, m in expect_span if m.expect and m.expect.parent),
        "new_trace": sum(1 for i, m in expect_span if m.expect and not m.expect.parent),
        "unsampled": len(unsampled), "spans": sum(len(v) for v in spans.values()),
    }


def part_a(run: Run, rotel, c, f) -> int:
    """Returns the number of calls whose status the server recorded (for the metric check)."""
    a = run.args
    server, port = run.start_server({
        **rotel.otel_env(a.protocol), "OTEL_SERVICE_NAME": SERVICE, "DB_LATENCY_MS": "0",
        "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_METRIC_EXPORT_INTERVAL": "1000",
    })
    base = f"http://127.0.0.1:{port}"
    muts = mutations.generate(a.seed)
    if a.limit:
        muts = muts[: a.limit]
    t0 = time.monotonic()
    sent = send_mutations(run, base, muts, a.parallel)
    f["mutations_s"] = round(time.monotonic() - t0, 2)
    print(f"  {len(sent)} mutated-header requests in {f['mutations_s']}s")

    results = []
    for name, body, want, ident in special_cases():
        results.append((name, want, ident, h2.call(base, h2.PROCESS_PATH, body, timeout=20)))
    unknown = h2.call(base, "/myservice.v1.MyService/NoSuchMethod", F(R(b"special-unknown-method")))
    results.append(("unknown-method", "UNIMPLEMENTED", None, unknown))
    cli_empty = procs.run_client(run.client_bin, base, ["--id", ""], env=run.client_env(), timeout=30,
                                 workdir=run.workdir, name="client-empty-id")
    cli_weird_id = 'cli "quoted"\nnext line'
    cli_weird = procs.run_client(run.client_bin, base, ["--id", cli_weird_id], env=run.client_env(), timeout=30,
                                 workdir=run.workdir, name="client-weird-id")

    alive = server.running()
    health = {svc or "(all)": h2.health(base, svc)[0] for svc in ("", "myservice.v1.MyService")}
    f["health_after"] = health

    # expected calls by status code, as the server's rpc.server.call.duration must count them
    expected: dict[str, int] = {}
    for _, _, r in sent:
        if r.all_2xx:
            expected["OK"] = expected.get("OK", 0) + 1
    for _, want, _, _ in results:
        expected[want] = expected.get(want, 0) + 1
    expected["INVALID_ARGUMENT"] = expected.get("INVALID_ARGUMENT", 0) + 1  # CLI --id ''
    expected["OK"] += 1  # CLI weird id
    f["expected_by_code"] = expected
    total = sum(expected.values())

    def counted(t: Telemetry) -> dict[str, float]:
        out = {}
        for code in set(expected) | {p.attributes.get("rpc.status_code") for p in t.find_points("rpc.server.call.duration", SERVICE)}:
            out[code] = t.metric_total("rpc.server.call.duration", SERVICE, **{"rpc.status_code": code})
        return out

    spans_expected = (sum(1 for _, m, r in sent if r.all_2xx and (m.expect is None or m.expect.sampled))
                      + len(results) + 2)
    try:
        rotel.wait_for(lambda t: sum(counted(t).values()) >= total
                       and len(t.find_spans(kind="SERVER", service=SERVICE)) >= spans_expected,
                       timeout=a.telemetry_timeout, what=f"{total} calls in rpc.server.call.duration and their spans")
    except TimeoutError as e:
        print(f"  (telemetry incomplete: {e}; checking what arrived)")

    # then, on their own (a lost export batch takes every span in it along): a legal but huge id
    # (just under the limit) and a few ordinary calls right after it. A collector accepts 4 MiB
    # per OTLP request by default (rotel too); the service must still get its telemetry there.
    limit = int(run.args.server_env_extra.get("MAX_MESSAGE_BYTES", MAX_MESSAGE_BYTES))
    near = NEAR_LIMIT_PREFIX + "x" * max(0, min(limit, MAX_MESSAGE_BYTES) - 16 - len(NEAR_LIMIT_PREFIX))
    later = [("id-near-limit", "OK", None, h2.call(base, h2.PROCESS_PATH, F(R(near)), timeout=30))]
    for i in range(CANARIES):
        later.append((f"canary-{i}", "OK", f"canary-{i}", h2.call(base, h2.PROCESS_PATH, F(R(f"canary-{i}")))))
    results += later
    expected["OK"] += len(later)
    total += len(later)
    try:
        rotel.wait_for(lambda t: sum(counted(t).values()) >= total, timeout=a.telemetry_timeout,
                       what=f"{total} calls in rpc.server.call.duration")
        # metrics do not go through the span batch; give the spans a bounded moment (25 x the
        # 200 ms batch delay) rather than the full timeout, since they may be lost for good
        rotel.wait_for(lambda t: {f"canary-{i}" for i in range(CANARIES)} <= {
            s.attributes.get("request.id") for s in t.find_spans(SERVER_SPAN, "SERVER", SERVICE)}, timeout=5,
            what="the canary spans")
    except TimeoutError as e:
        print(f"  (telemetry incomplete: {e}; checking what arrived)")
    rc = server.stop(timeout=30)
    t = rotel.telemetry()

    c.section("A1 mutated trace headers")
    check_mutations(c, f, t, sent)

    c.section("A2 hand-made messages")
    got = {name: r.code for name, _, _, r in results}
    f["special_codes"] = got
    c.empty([f"{name}: expected {want}, got {r.code} ({r.grpc_message!r}; {r.error[:100]})"
             for name, want, _, r in results if r.code != want], "every hand-made message got the expected gRPC status")
    records = common.server_stdout_checks(c, server)
    logged = set(common.processed_ids(records))
    # Telemetry carries at most the first 256 characters of a caller's value (telemetry::bounded).
    c.empty([f"{name}: {ident[:40]!r}" for name, want, ident, _ in results
             if ident and ident[:TELEMETRY_MAX_CHARS] not in logged],
            "the server logged every odd id as sent, cut to 256 characters (JSON-escaped on stdout)")
    other = [s for s in t.find_spans(kind="SERVER", service=SERVICE)
             if "NoSuchMethod" in s.name or "NoSuchMethod" in str(s.attributes.get("rpc.method_original", ""))]
    shown = [(s.name, s.attributes.get("rpc.method"), s.attributes.get("rpc.status_code")) for s in other]
    c.check(len(other) == 1 and other[0].attributes.get("rpc.method") == "_OTHER"
            and other[0].attributes.get("rpc.status_code") == "UNIMPLEMENTED",
            "the unknown method's span has rpc.method _OTHER and rpc.status_code UNIMPLEMENTED", f"{shown}")
    c.check(len(other) == 1 and other[0].name == "grpc.server._OTHER",
            "the unknown method's span is named grpc.server._OTHER (span names stay low-cardinality)",
            f"(name, rpc.method, status) = {shown}")
    statuses = {}
    for s in t.find_spans(kind="SERVER", service=SERVICE):
        code = s.attributes.get("rpc.status_code")
        statuses[code] = statuses.get(code, 0) + 1
    f["server_spans_by_code"] = statuses
    for code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "INTERNAL"):
        c.equal(statuses.get(code, 0), expected.get(code, 0), f"server spans with rpc.status_code {code}")
    server_ids = [str(s.attributes.get("request.id", "")) for s in t.find_spans(SERVER_SPAN, "SERVER", SERVICE)]
    c.check(any(i.startswith(NEAR_LIMIT_PREFIX) for i in server_ids),
            "the span of the call with a near-limit (4 MiB) id reached rotel",
            "not received (see the export errors below)")
    c.empty(sorted({f"canary-{i}" for i in range(CANARIES)} - set(server_ids)),
            "the spans of the calls right after it reached rotel")
    sdk = common.sdk_problems(records)
    c.empty([f"{r.get('target')}: {r.get('msg')} {r.get('error', '')}".strip()[:200] for r in sdk if common.level(r) >= 50],
            "no telemetry export failed (no ERROR from opentelemetry*)")
    c.empty(common.repeats_within(sdk, 60.0), "the SDK's complaints about bad headers are rate-limited (no callsite twice in 60 s)")
    f["sdk_warnings"] = sorted({str(r.get("msg"))[:80] for r in sdk})

    c.section("A3 client CLI")
    c.check(cli_empty.returncode == 1 and "INVALID_ARGUMENT" in (cli_empty.error or ""),
            "client --id '' exits 1 with INVALID_ARGUMENT", f"exit {cli_empty.returncode}, {cli_empty.error!r}")
    c.check(cli_weird.ok, "client --id with quotes and a newline succeeds", f"exit {cli_weird.returncode} {cli_weird.error!r}")
    c.check(cli_weird_id in logged, "the server logged that id exactly")

    c.section("A4 the server survived")
    c.check(alive, "the server process was alive after all of it")
    c.equal(health, {"(all)": "SERVING", "myservice.v1.MyService": "SERVING"}, "health check")
    by_code = counted(t)
    f["metric_calls_by_code"] = {k: v for k, v in by_code.items() if v}
    c.empty([f"{code}: metric {by_code.get(code, 0):g}, sent {n}" for code, n in sorted(expected.items())
             if by_code.get(code, 0) != n], "rpc.server.call.duration counts every call under its status code")
    c.empty([f"{code}: {n:g}" for code, n in by_code.items() if n and code not in expected],
            "no call counted under an unexpected status code")
    c.check(rc == 0 and not server.killed, "server exited 0 on SIGTERM", f"exit {rc}")
    f["undecoded_requests"] = len(t.unparsed)
    return total


# --------------------------------------------------------------------------------------------
# Part B
# --------------------------------------------------------------------------------------------


def otel_cases(rotel) -> list[tuple[str, dict[str, str], list[str], bool]]:
    """(name, env, variables a warning must name (one warning each), spans must reach rotel)."""
    grpc = rotel.otel_env("grpc")
    return [
        ("unknown-protocol", {**grpc, "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"},
         ["OTEL_EXPORTER_OTLP_PROTOCOL"], True),
        # The spec's scheme-less gRPC endpoint: INSECURE=true makes it plaintext, no warning.
        ("endpoint-without-scheme", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                     "OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1:{rotel.grpc_port}",
                                     "OTEL_EXPORTER_OTLP_INSECURE": "true"},
         [], True),
        ("endpoint-not-a-url", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                                "OTEL_EXPORTER_OTLP_ENDPOINT": f"127.0.0.1 {rotel.grpc_port}"},
         ["OTEL_EXPORTER_OTLP_ENDPOINT"], False),
        ("negative-metric-interval", {**grpc, "OTEL_METRIC_EXPORT_INTERVAL": "-5"},
         ["OTEL_METRIC_EXPORT_INTERVAL"], True),
        ("malformed-header-entry", {**grpc, "OTEL_EXPORTER_OTLP_HEADERS": f"x-api-key={SECRET}-1,{SECRET}-2-no-equals"},
         ["OTEL_EXPORTER_OTLP_HEADERS"], True),
        # The SDK reads the sampler itself and says so when it falls back: no warning of ours.
        ("unknown-sampler", {**grpc, "OTEL_TRACES_SAMPLER": "sometimes"}, [], True),
        ("headers-with-secrets", {**grpc, "OTEL_EXPORTER_OTLP_HEADERS":
                                  f"bad key={SECRET}-3,x-empty=,x-ok={SECRET}-4",
                                  "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"{SECRET}-5"},
         ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"], True),
    ]


# Cases the SDK itself warns about (the telemetry crate writes what the SDK said while it was
# built, under its own target): what the SDK's line says. It comes once, and no warning of ours.
SDK_SAYS = {"unknown-sampler": "Unrecognized sampler type 'sometimes' in OTEL_TRACES_SAMPLER"}


def part_b(run: Run, rotel, c, f) -> None:
    a = run.args
    c.section("B bad OTEL_* values")
    f["otel_cases"] = {}
    for name, env, names, spans_expected in otel_cases(rotel):
        svc = f"e2e-otel-{name}"
        server, port = run.start_server({**env, "OTEL_SERVICE_NAME": svc, "OTEL_BSP_SCHEDULE_DELAY": "200",
                                         "DB_LATENCY_MS": "0"}, name=f"server-{name}")
        res = procs.run_client(run.client_bin, f"http://127.0.0.1:{port}", ["--id", f"otel-{name}"],
                               env=run.client_env(), timeout=30, workdir=run.workdir, name=f"client-{name}")
        arrived = None
        if spans_expected:
            try:
                rotel.wait_for(lambda t: any(s.attributes.get("request.id") == f"otel-{name}"
                                             for s in t.find_spans(SERVER_SPAN, service=svc)),
                               timeout=a.telemetry_timeout, what=f"the span of otel-{name}")
                arrived = True
            except TimeoutError:
                arrived = False
        rc = server.stop(timeout=30)
        records = common.read_records(server.stdout_path)
        warns = [r for r in records if common.level(r) == 40 and r.get("target") == "telemetry"]
        sdk = [r for r in warns if name in SDK_SAYS and SDK_SAYS[name] in str(r.get("msg"))]
        warns = [r for r in warns if r not in sdk]
        text = server.stdout_text() + server.stderr_text()
        f["otel_cases"][name] = {"warnings": [r.get("msg") for r in warns], "call_ok": res.ok,
                                 "span_arrived": arrived, "exit": rc, "stop_s": round(server.stop_duration_s() or 0, 2)}
        c.equal(len(warns), len(names), f"{name}: WARN lines with target telemetry (one per bad value)")
        c.empty([v for v in set(names) if not any(str(r.get("msg")).startswith(v) for r in warns)],
                f"{name}: a warning names each bad variable")
        c.empty([r.get("msg") for r in warns if not any(str(r.get("msg")).startswith(v) for v in names)],
                f"{name}: every warning starts with the variable it is about")
        if name in SDK_SAYS:
            c.equal(len(sdk), 1, f"{name}: the SDK's own warning reaches stdout, once")
        c.check(SECRET not in text, f"{name}: no header value printed", "a secret appears in the output")
        c.check(res.ok, f"{name}: the service answers", f"exit {res.returncode} {res.error!r}")
        if spans_expected:
            c.check(bool(arrived), f"{name}: the span reached rotel through the fallback")
        c.check(rc == 0 and not server.killed, f"{name}: exit 0 on SIGTERM", f"exit {rc}")
        try:
            procs.read_json_lines(server.stdout_path)
        except procs.JsonLinesError as e:
            c.check(False, f"{name}: stdout is JSON lines", str(e).splitlines()[0])
        c.empty(common.panics(text), f"{name}: no panic")


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    rotel = run.rotel()
    rotel.start()
    print(f"{TITLE}: rotel {rotel.grpc_port}/{rotel.http_port}, workdir {run.workdir}")
    part_a(run, rotel, c, f)
    if not a.skip_otel:
        part_b(run, rotel, c, f)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "bad-input"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
