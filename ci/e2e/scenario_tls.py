#!/usr/bin/env python3
"""Scenario 7, "TLS on every wire": the client calls the server over mutual TLS, and both export
their telemetry over mutual TLS, for one OTLP protocol. The OTLP side ends at the harness's own
receiver (otlp_receiver.py serving TLS on gRPC and HTTP), not at rotel: rotel's receivers take
plaintext only.

1. make a throwaway PKI with the openssl CLI (a test tool here, not a dependency of the service):
   a CA, a certificate for localhost/127.0.0.1 (server and receiver) and a client certificate;
2. start the receiver over TLS, requiring client certificates;
3. start the server with --tls-cert/--tls-key/--tls-client-ca (through TLS_*_FILE) and OTLP to
   https:// with OTEL_EXPORTER_OTLP_CERTIFICATE/_CLIENT_CERTIFICATE/_CLIENT_KEY;
4. one client call to https://localhost:<port> with --tls-ca/--tls-cert/--tls-key, its telemetry
   on the same https OTLP path; then a client without a certificate, which must be refused;
5. SIGTERM the server and check: the call succeeded; its trace arrived whole (client span →
   server span, same trace, parent = the client span) from both processes; the server's log
   records and metrics arrived; the client without a certificate was refused; the server exited
   0 and wrote no WARN line about TLS or export.

    $PY ci/e2e/scenario_tls.py --bin-dir /tmp/cg-target/release
    $PY ci/e2e/scenario_tls.py --protocol http/protobuf
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import procs  # noqa: E402
from common import CLIENT_SPAN, SERVER_SPAN, Run  # noqa: E402

TITLE = "scenario tls"
SERVICE, CLIENT_SERVICE = "e2e-tls-server", "e2e-tls-client"


def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc")
    p.add_argument("--telemetry-timeout", type=float, default=30.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "tls")


def make_pki(d: Path) -> None:
    """ca.pem, server.pem/key (SAN localhost, 127.0.0.1), client.pem/key; valid for one day."""
    d.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=e2e test CA")
    for name, san in (("server", "DNS:localhost,IP:127.0.0.1"), ("client", "DNS:e2e-client")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


def body(run: Run) -> None:
    a, c, f = run.args, run.checks, run.figures
    pki = run.workdir / "pki"
    try:
        make_pki(pki)
    except (OSError, subprocess.CalledProcessError) as e:
        raise common.CouldNotRun(f"cannot make the test PKI with openssl: {e}") from e
    file = lambda name: str(pki / name)  # noqa: E731
    receiver = run.receiver(host="127.0.0.1", tls=(file("server.pem"), file("server.key")),
                            client_ca=file("ca.pem")).start()
    endpoint = receiver.grpc_endpoint if a.protocol == "grpc" else receiver.http_endpoint
    f["otlp_endpoint"] = endpoint
    f["otlp_receiver"] = "ci/e2e/otlp_receiver.py over TLS (rotel's receivers are plaintext)"
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": a.protocol,
        "OTEL_EXPORTER_OTLP_CERTIFICATE": file("ca.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE": file("client.pem"),
        "OTEL_EXPORTER_OTLP_CLIENT_KEY": file("client.key"),
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    server, port = run.start_server({
        **otel,
        "OTEL_SERVICE_NAME": SERVICE,
        "TLS_CERT_FILE": file("server.pem"),
        "TLS_KEY_FILE": file("server.key"),
        "TLS_CLIENT_CA_FILE": file("ca.pem"),
    })
    url = f"https://localhost:{port}"
    print(f"{TITLE}: client -> {url} (mutual TLS), OTLP {a.protocol} -> {endpoint} (mutual TLS), workdir {run.workdir}")

    call = procs.run_client(run.client_bin, url, ["--id", "tls-call"], timeout=60, workdir=run.workdir, name="client",
                            env=run.client_env({**otel, "OTEL_SDK_DISABLED": "false", "RUST_LOG": "info",
                                                "OTEL_SERVICE_NAME": CLIENT_SERVICE, "TLS_CA_FILE": file("ca.pem"),
                                                "TLS_CERT_FILE": file("client.pem"), "TLS_KEY_FILE": file("client.key")}))
    c.check(call.ok, "the call over mutual TLS succeeded", call.stderr[-500:])
    refused = procs.run_client(run.client_bin, url, ["--id", "tls-no-cert"], timeout=60, workdir=run.workdir,
                               name="client-no-cert", env=run.client_env({"TLS_CA_FILE": file("ca.pem")}))
    # With TLS 1.3 the client learns of the refusal after its own handshake: the server's alert
    # (CertificateRequired) or just the closed connection, whichever the client reads first.
    c.check(not refused.ok and refused.error is not None, "a client without a certificate is refused",
            (refused.stdout + refused.stderr)[-300:])
    f["refused_client_error"] = refused.error

    code = server.stop()
    c.equal(code, 0, "server exit status after SIGTERM")
    trace_id = call.trace_id or ""
    f["trace_id"] = trace_id

    def whole(t) -> bool:
        spans = [s for s in t.spans if s.trace_id == trace_id]
        names = {(s.name, s.service_name) for s in spans}
        return ((CLIENT_SPAN, CLIENT_SERVICE) in names and (SERVER_SPAN, SERVICE) in names
                and bool(t.find_logs(SERVICE)) and bool([p for p in t.data_points if p.service_name == SERVICE]))

    try:
        t = receiver.wait_for(whole, timeout=a.telemetry_timeout, what="the call's trace, logs and metrics over TLS")
    except TimeoutError as e:
        c.check(False, "the call's trace, the server's logs and metrics arrived over TLS", str(e))
        return
    spans = [s for s in t.spans if s.trace_id == trace_id]
    client = next(s for s in spans if s.name == CLIENT_SPAN)
    srv = next(s for s in spans if s.name == SERVER_SPAN)
    attempt = next((s for s in spans if s.span_id == srv.parent_span_id), None)
    c.equal(attempt.parent_span_id if attempt else None, client.span_id,
            "the server span's parent is an attempt of the client span (one trace over TLS)")
    f["spans_in_trace"] = len(spans)
    f["server_log_records"] = len(t.find_logs(SERVICE))
    records = common.server_stdout_checks(c, server)
    warnings = [r.get("msg", "") for r in records if common.level(r) >= 40]
    c.empty(warnings, "no WARN/ERROR line from the server (TLS files, exports)")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "tls"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
