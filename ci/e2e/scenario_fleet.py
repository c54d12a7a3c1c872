#!/usr/bin/env python3
"""Scenario "fleet": three server replicas on 127.0.0.1, .2 and .3 with one port, as pods would be,
exporting to one collector (rotel), and the client's load mode balancing over them (--lb dns)
through a real name that a small local DNS server (dnslib) answers with the three addresses.

1. SIGTERM of a replica during load (DRAIN_DELAY_SECS=2): the calls spread over the three; the
   client sees no failure (the replica reports NOT_SERVING first, the client stops choosing it);
   the replica exits 0 and every call it served has its server span at the collector;
2. kill -9 of a replica during load: the client goes on with the other replicas and no call
   fails: the calls in flight on the killed one (a broken connection, UNAVAILABLE) are retried;
   the client's traces (exported to rotel for this part) have one CLIENT span per call, attempt
   spans numbered 1, 2, ... under it, each naming the replica it reached (network.peer.address; the
   server span under it is that replica's), every server span under an attempt of the same trace, and no
   span whose parent is missing;
3. the two replicas restarted on their addresses get calls again (the client's health watch takes
   them back); kill -STOP of one: it leaves the balancer within the keep-alive bound
   (KEEPALIVE_SECS + KEEPALIVE_TIMEOUT_SECS, 1 + 1 s here): the load ends on time, the others
   serve on after the bound, and no call fails (those stuck on it fail at the bound and are
   retried);
4. a name that does not resolve: the client stops at once with the resolver's reason;
5. ClusterIP stand-in: haproxy (mode tcp, roundrobin) in front of three replicas with
   MAX_CONNECTION_AGE_SECS=2, clients with --lb none; a fourth replica comes up behind it and gets
   calls within about two connection ages, and no call fails as connections age out (retried).
   Skipped, saying so, when haproxy is not installed.

    $PY ci/e2e/scenario_fleet.py --bin-dir /tmp/cg-target/release
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import procs  # noqa: E402
from common import ATTEMPT_SPAN, CLIENT_SPAN, SERVER_SPAN, Run  # noqa: E402

TITLE = "scenario fleet"
NAME = "fleet.e2e.test"
# Three replicas on one port, like pods: Linux routes all of 127.0.0.0/8 to loopback; macOS and
# Windows answer only on 127.0.0.1 unless the other addresses are added as aliases.
IPS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
CONCURRENCY = 6
CLIENT_SERVICE = "e2e-fleet-client"
KEEPALIVE_BOUND_S = 2.0  # KEEPALIVE_SECS=1 + KEEPALIVE_TIMEOUT_SECS=1



def parse_args(argv: list[str]):
    p = common.base_parser(__doc__)
    p.add_argument("--telemetry-timeout", type=float, default=20.0)
    a = p.parse_args(argv)
    return common.finish_args(p, a, "fleet")


class Dns:
    """A DNS server on 127.0.0.1 (UDP, a free port) that answers NAME with the addresses set,
    and NXDOMAIN for any other name."""

    def __init__(self, addresses: list[str]) -> None:
        from dnslib import QTYPE, RCODE, RR, A
        from dnslib.server import BaseResolver, DNSLogger, DNSServer

        dns = self

        class Resolver(BaseResolver):
            def resolve(self, request, handler):
                reply = request.reply()
                dns.queries += 1
                if str(request.q.qname).rstrip(".").lower() != NAME:
                    reply.header.rcode = RCODE.NXDOMAIN
                elif request.q.qtype in (QTYPE.A, QTYPE.ANY):
                    for ip in dns.addresses:
                        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(ip), ttl=1))
                return reply

        self.addresses = list(addresses)
        self.queries = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = DNSServer(Resolver(), port=self.port, address="127.0.0.1",
                                logger=DNSLogger(logf=lambda _: None))
        self.server.start_thread()

    def stop(self) -> None:
        self.server.stop()


def count(server: procs.ManagedProcess, prefix: str, after: float | None = None) -> int:
    """Calls of ``prefix`` that ``server`` logged as processed (after wall time ``after``)."""
    records = common.read_records(server.stdout_path)
    if after is not None:
        records = [r for r in records if (common.bunyan_time(r) or 0) >= after]
    return len(common.processed_ids(records, prefix))


def body(run: Run) -> None:
    try:
        import dnslib  # noqa: F401
    except ImportError as e:
        raise common.CouldNotRun("dnslib is not installed in this python (ci/lib.sh ensure_rotel)") from e
    rotel = run.rotel()
    rotel.start()
    dns = Dns(list(IPS))
    try:
        fleet(run, rotel, dns)
    finally:
        dns.stop()
    cluster_ip(run)


def kill_traces(run: Run, rotel, calls: int, services: dict[str, str]) -> None:
    """The traces of the calls made while a replica was killed: one CLIENT span per call, an
    attempt span per attempt under it (numbered 1, 2, ...), each naming a replica
    (network.peer.address, one of ``services``' addresses, the failed attempts on the killed one
    too), every server span under an attempt of the same trace that names that server's replica,
    no span whose parent is missing."""
    c, f = run.checks, run.figures

    def client_spans(t):
        return [s for s in t.find_spans(CLIENT_SPAN, None, CLIENT_SERVICE)
                if str(s.attributes.get("request.id", "")).startswith("kill-")]

    try:
        rotel.wait_for(lambda t: len(client_spans(t)) >= calls, timeout=run.args.telemetry_timeout,
                       what="the client's spans of the kill phase")
    except TimeoutError:
        pass
    t = rotel.telemetry()
    calls_spans = client_spans(t)
    by_id = {s.span_id: s for s in t.find_spans()}
    ids = [s.attributes.get("request.id") for s in calls_spans]
    c.equal(len(calls_spans), calls, "one CLIENT span per call made while a replica was killed")
    c.equal(len(set(ids)), len(ids), "no call has two CLIENT spans")
    call_ids = {s.span_id for s in calls_spans}
    attempts = [s for s in t.find_spans(ATTEMPT_SPAN, None, CLIENT_SERVICE) if s.parent_span_id in call_ids]
    per_call: dict[str, list[int]] = {}
    for s in attempts:
        per_call.setdefault(s.parent_span_id, []).append(int(s.attributes.get("grpc.attempt", 0)))
    misnumbered = [n for n in per_call.values() if sorted(n) != list(range(1, len(n) + 1))]
    retried = sum(1 for n in per_call.values() if len(n) > 1)
    f["kill_calls_retried"] = retried
    c.check(len(per_call) == len(call_ids) and not misnumbered,
            "every call has its attempt spans, numbered 1, 2, ...",
            f"{len(per_call)} of {len(call_ids)} calls with attempts; misnumbered: {misnumbered[:3]}")
    attempt_ids = {s.span_id: s for s in attempts}
    server_spans = [s for s in t.find_spans(SERVER_SPAN, "SERVER")
                    if str(s.attributes.get("request.id", "")).startswith("kill-")]
    bad = [s.span_id for s in server_spans
           if s.parent_span_id not in attempt_ids or attempt_ids[s.parent_span_id].trace_id != s.trace_id]
    c.check(server_spans and not bad, "every server span's parent is an attempt of the same trace",
            f"{len(bad)} of {len(server_spans)}: {bad[:3]}")
    unnamed = [s.span_id for s in attempts if s.attributes.get("network.peer.address") not in services]
    c.check(attempts and not unnamed, "every attempt span names a replica (network.peer.address)",
            f"{len(unnamed)} of {len(attempts)}: {[attempt_ids[i].attributes for i in unnamed[:2]]}")
    replica = {name: ip for ip, name in services.items()}
    misnamed = [(attempt_ids[s.parent_span_id].attributes.get("network.peer.address"), s.service_name)
                for s in server_spans if s.parent_span_id in attempt_ids
                and attempt_ids[s.parent_span_id].attributes.get("network.peer.address") != replica.get(s.service_name)]
    c.check(server_spans and not misnamed, "each attempt names the replica whose server span is under it",
            f"{len(misnamed)} of {len(server_spans)} (peer, server): {misnamed[:3]}")
    f["kill_failed_attempts_named"] = sum(1 for s in attempts if s.attributes.get("rpc.status_code") != "OK"
                                          and s.attributes.get("network.peer.address") in services)
    orphans = [s.span_id for s in t.find_spans(service=CLIENT_SERVICE)
               if s.parent_span_id and s.parent_span_id not in by_id]
    c.check(not orphans, "no client span whose parent is missing", str(orphans[:3]))


def fleet(run: Run, rotel, dns: Dns) -> None:
    a, c, f = run.args, run.checks, run.figures
    port = procs.free_port()
    services = {ip: f"e2e-fleet-{i + 1}" for i, ip in enumerate(IPS)}

    def start(ip: str, name: str) -> procs.ManagedProcess:
        env = {**rotel.otel_env("grpc"), "OTEL_SERVICE_NAME": services[ip], "FAILURE_RATE": "0",
               "DB_LATENCY_MS": "20", "DRAIN_DELAY_SECS": "2", "OTEL_BSP_SCHEDULE_DELAY": "5000",
               **a.server_env_extra}
        p, _ = procs.start_server(run.server_bin, run.workdir, env, host=ip, port=port, name=name)
        run.processes.append(p)
        return p

    servers = {ip: start(ip, f"server-{i + 1}") for i, ip in enumerate(IPS)}
    url = f"http://{NAME}:{port}"
    client_env = {"LB_POLICY": "dns", "DNS_SERVER": f"127.0.0.1:{dns.port}", "DNS_REFRESH_SECS": "2",
                  "KEEPALIVE_SECS": "1", "KEEPALIVE_TIMEOUT_SECS": "1"}
    f.update(port=port, dns_port=dns.port, concurrency=CONCURRENCY)
    print(f"{TITLE}: replicas {', '.join(IPS)} on port {port}, {url} through DNS on 127.0.0.1:{dns.port}, "
          f"workdir {run.workdir}")

    def load(prefix: str, seconds: int) -> common.BackgroundLoad:
        return run.load(url, f"load-{prefix.rstrip('-')}", CONCURRENCY, duration=f"{seconds}s", id_prefix=prefix,
                        env=client_env)

    def all_called(prefix: str, ips, n: int, bg: common.BackgroundLoad, what: str) -> None:
        common.poll_until(lambda: all(count(servers[ip], prefix) >= n for ip in ips), timeout=15,
                          what=what, alive=[bg.proc, *(servers[ip] for ip in ips)])

    # 1. SIGTERM
    c.section("SIGTERM of one replica")
    bg = load("term-", 6)
    all_called("term-", IPS, 30, bg, "calls on all three replicas")
    shares = {ip: count(servers[ip], "term-") for ip in IPS}
    total = sum(shares.values())
    f["spread_before_sigterm"] = "/".join(str(shares[ip]) for ip in IPS)
    c.check(all(0.20 <= v / total <= 0.47 for v in shares.values()),
            "the calls spread over the three replicas (each 20-47%)", str(shares))
    leaving = servers[IPS[0]]
    leaving.proc.send_signal(signal.SIGTERM)
    rc = leaving.wait(timeout=20)
    summary = bg.result(timeout=30)
    f.update(sigterm_ok=summary.ok, sigterm_errors=summary.errors)
    c.empty(common.load_problems(summary), "the client saw no failure while a replica drained")
    c.check(rc == 0, "the replica exited 0 after SIGTERM", f"exit {rc}")
    after_term = {ip: count(servers[ip], "term-") for ip in IPS}
    c.check(all(after_term[ip] > shares[ip] for ip in IPS[1:]), "the others served on", str(after_term))
    served = set(common.processed_ids(common.read_records(leaving.stdout_path), "term-"))

    def complete(t) -> bool:
        ids = {s.attributes.get("request.id") for s in t.find_spans(SERVER_SPAN, "SERVER", services[IPS[0]])}
        return served <= ids

    try:
        rotel.wait_for(complete, timeout=a.telemetry_timeout, what="the drained replica's server spans")
        got = len(served)
    except TimeoutError:
        t = rotel.telemetry()
        got = len(served & {s.attributes.get("request.id") for s in t.find_spans(SERVER_SPAN, "SERVER", services[IPS[0]])})
    f["drained_replica_spans"] = f"{got}/{len(served)}"
    c.check(served and got == len(served), "every call the drained replica served has its span at the collector",
            f"{got} of {len(served)}")

    # 2. kill -9
    c.section("kill -9 of one replica")
    # The client's own telemetry on, to rotel: the trace of each call is checked below.
    bg = run.load(url, "load-kill", CONCURRENCY, duration="5s", id_prefix="kill-",
                  env={**client_env, **rotel.otel_env(), "OTEL_SDK_DISABLED": "false",
                       "OTEL_SERVICE_NAME": CLIENT_SERVICE, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    all_called("kill-", IPS[1:], 20, bg, "calls on the two replicas left")
    killed = servers[IPS[1]]
    killed.proc.send_signal(signal.SIGKILL)
    killed.wait(timeout=5)
    killed_wall = time.time()
    summary = bg.result(timeout=30)
    failed = summary.requests - summary.ok
    f.update(kill_ok=summary.ok, kill_failed=failed, kill_errors=summary.errors)
    print(f"  calls failed when a replica was killed: {failed} of {summary.requests} {summary.errors}")
    c.check(failed == 0, "no call failed: those in flight on it were retried", f"{failed} failed: {summary.errors}")
    c.check(count(servers[IPS[2]], "kill-", after=killed_wall + 0.5) > 0, "the last replica served on after the kill")
    kill_traces(run, rotel, summary.requests, services)

    # 3. back, then kill -STOP
    c.section("replicas back, then kill -STOP of one")
    for i, ip in enumerate(IPS[:2]):
        servers[ip] = start(ip, f"server-{i + 1}b")
    bg = load("stop-", 10)
    back_at = time.monotonic()
    all_called("stop-", IPS, 10, bg, "calls on the restarted replicas")
    f["restarted_replicas_called_after_s"] = round(time.monotonic() - back_at, 2)
    c.check(True, "the restarted replicas got calls again", f"after {f['restarted_replicas_called_after_s']}s")
    hung = servers[IPS[2]]
    hung.proc.send_signal(signal.SIGSTOP)
    stopped_wall = time.time()
    try:
        summary = bg.result(timeout=20)
    except common.CouldNotRun as e:
        c.check(False, "the load ended on time (no call stuck on the hung one)", str(e))
        return
    finally:
        hung.proc.send_signal(signal.SIGKILL)
    f["stop_load_s"] = round(summary.duration_s, 2)
    failed = summary.requests - summary.ok
    f.update(stop_ok=summary.ok, stop_failed=failed, stop_errors=summary.errors)
    after = stopped_wall + KEEPALIVE_BOUND_S + 0.5
    others_after = sum(count(servers[ip], "stop-", after=after) for ip in IPS[:2])
    f["served_by_others_after_bound"] = others_after
    c.check(others_after > 0, f"the others serve on after the keep-alive bound ({KEEPALIVE_BOUND_S:.0f}s)",
            str(others_after))
    c.check(summary.duration_s < 10 + KEEPALIVE_BOUND_S + 3, "the load ended on time (no call stuck on the hung one)",
            f"{summary.duration_s:.1f}s for a 10s run")
    c.check(failed == 0, "no call failed: those stuck on the hung replica were retried at the bound",
            f"{failed}: {summary.errors}")

    # 4. bad name
    c.section("a name that does not resolve")
    began = time.monotonic()
    r = procs.run_client(run.client_bin, f"http://nowhere.e2e.test:{port}", [],
                         env=run.client_env({**client_env}), timeout=30, workdir=run.workdir, name="client-bad-name")
    took = time.monotonic() - began
    c.check(r.returncode == 1 and "nowhere.e2e.test" in r.stderr and took < 4,
            "the client stops at once with the name in its error", f"exit {r.returncode} in {took:.1f}s: "
            f"{r.stderr.strip().splitlines()[-2:] if r.stderr.strip() else ''}")
    for p in servers.values():
        if p.running():
            p.stop(timeout=10)
    c.empty(common.panics(*(p.stdout_text() + p.stderr_text() for p in servers.values())), "no panic")


def cluster_ip(run: Run) -> None:
    c, f = run.checks, run.figures
    c.section("behind a TCP round-robin proxy (ClusterIP stand-in), --lb none")
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        print("  SKIPPED: haproxy is not installed (ci/lib.sh ensure_haproxy; Debian package haproxy)")
        f["cluster_ip"] = "skipped: no haproxy"
        return
    age = 2
    port, front = procs.free_port(), procs.free_port()
    ips = (*IPS, "127.0.0.4")
    config, stats = run.workdir / "haproxy.cfg", run.workdir / "haproxy.sock"
    config.write_text("\n".join([
        "global", "  maxconn 512", f"  stats socket {stats} mode 600",
        "defaults", "  mode tcp", "  timeout connect 1s", "  timeout client 30s", "  timeout server 30s",
        "frontend fleet", f"  bind 127.0.0.1:{front}", "  default_backend replicas",
        "backend replicas", "  balance roundrobin",
        *(f"  server r{i + 1} {ip}:{port} check inter 300 fall 1 rise 1" for i, ip in enumerate(ips)),
        "",
    ]))
    proxy = procs.ManagedProcess([haproxy, "-f", str(config), "-db"], procs.build_env(), run.workdir, "haproxy").start()
    run.processes.append(proxy)
    procs.wait_for_port("127.0.0.1", front, timeout=10, proc=proxy)

    def start(ip: str, name: str) -> procs.ManagedProcess:
        env = {"OTEL_SDK_DISABLED": "true", "FAILURE_RATE": "0", "DB_LATENCY_MS": "20",
               "MAX_CONNECTION_AGE_SECS": str(age), **run.args.server_env_extra}
        p, _ = procs.start_server(run.server_bin, run.workdir, env, host=ip, port=port, name=name)
        run.processes.append(p)
        return p

    servers = [start(ip, f"cip-server-{i + 1}") for i, ip in enumerate(ips[:3])]

    def states() -> dict[str, str]:
        """haproxy's view of each replica (UP, DOWN, ...), from its stats socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(stats))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = [line.split(",") for line in data.decode().splitlines() if line.startswith("replicas,r")]
        return {row[1]: row[17] for row in rows}

    # haproxy starts with every server UP until its first check: wait until it has seen the fourth
    # one down and the others up, or clients would be sent to a closed port.
    common.poll_until(lambda: states() == {"r1": "UP", "r2": "UP", "r3": "UP", "r4": "DOWN"}, timeout=10,
                      what="haproxy: three replicas UP, the fourth DOWN", alive=[proxy])
    # Four clients, one connection each, as pods of a calling service would be.
    loads = [run.load(f"http://127.0.0.1:{front}", f"load-cip-{i}", 2, duration="9s", id_prefix=f"cip{i}-",
                      env={"LB_POLICY": "none"}) for i in range(4)]
    common.poll_until(lambda: sum(count(s, "cip") for s in servers) >= 20, timeout=15, what="calls through haproxy",
                      alive=[proxy, *(b.proc for b in loads)])
    fourth = start(ips[3], "cip-server-4")
    added = time.monotonic()
    try:
        common.poll_until(lambda: count(fourth, "cip") > 0, timeout=3 * age + 2, what="a call on the fourth replica",
                          alive=[proxy])
        took = time.monotonic() - added
    except TimeoutError:
        took = None
    f["cluster_ip_fourth_called_after_s"] = round(took, 2) if took is not None else None
    c.check(took is not None and took <= 2 * age + 1,
            f"the fourth replica gets calls within about two connection ages ({age}s each)", f"after {took}s")
    failed, made = 0, 0
    for b in loads:
        s = b.result(timeout=30)
        failed, made = failed + s.requests - s.ok, made + s.requests
        c.check(s.ok > 0, f"{b.proc.name}: calls served across the connection ages", f"{s.ok} of {s.requests}")
    f["cluster_ip_failed"] = f"{failed}/{made}"
    # A call that meets its connection's GOAWAY (the server's MAX_CONNECTION_AGE_SECS) fails in
    # tonic's client (UNAVAILABLE "transport error" or CANCELLED, a few per connection age without
    # retries); the client's retries of idempotent calls take them to the next connection.
    c.check(failed == 0, "no call failed across the connection ages (retried)", f"{failed} of {made}")
    proxy.stop(timeout=5)
    for p in [*servers, fourth]:
        p.stop(timeout=10)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    return common.main_wrapper(Run(args, "fleet"), TITLE, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
