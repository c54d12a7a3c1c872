#!/usr/bin/env python3
"""Checks that a rendered workspace's deployment files agree with its services' own configuration.

    deploy_check.py WORKSPACE OVERLAY_YAML

OVERLAY_YAML is `kubectl kustomize deploy/overlays/example` of WORKSPACE. For every service (every
crates/<svc>-server), the numbers come from the rendered sources, never from this script:
  port        DEFAULT_PORT in crates/<svc>-proto/src/lib.rs (also the answers file's `port`)
  service     GRPC_SERVICE in the same file (what the readiness probe must ask for)
  delay       DEFAULT_DRAIN_DELAY_SECS in crates/grpc-serving/src/config.rs, the one place the
              default is written (readiness NOT_SERVING while calls are still served, before
              the drain)
  drain       DEFAULT_DRAIN_TIMEOUT_SECS in the same file
  cut         CUT_WAIT in crates/grpc-serving/src/drain.rs (how long calls cut at the drain
              timeout have to be recorded)
  flush       SHUTDOWN_BUDGET in crates/telemetry/src/lib.rs (the telemetry guard's flush budget)
and the overlay's Deployment, Service and headless Service, and compose.yaml's entry, must match
them: container, probe and Service ports; readiness on the service's name, liveness on "";
a headless Service <svc>-headless (clusterIP None, ready pods only) for client-side balancing;
terminationGracePeriodSeconds above preStop + delay + drain + cut + flush;
compose's stop_grace_period above delay + drain + cut + flush; the downward API behind OTEL_RESOURCE_ATTRIBUTES; a collector
that is not localhost. Prints one line per service, exits 1 on the first list of problems.
"""
import glob
import os
import re
import sys
import tomllib

import yaml

K8S_ATTRIBUTES = {
    "k8s.pod.name": "metadata.name",
    "k8s.namespace.name": "metadata.namespace",
    "k8s.node.name": "spec.nodeName",
    "k8s.pod.uid": "metadata.uid",
}


def grab(path, pattern, what):
    with open(path) as f:
        match = re.search(pattern, f.read())
    if not match:
        sys.exit(f"deploy_check: cannot find {what} in {path} (pattern {pattern!r}): update ci/deploy_check.py")
    return match.group(1)


def seconds(value):
    """A compose duration (25s, 1m30s, 90) in seconds."""
    if isinstance(value, (int, float)):
        return value
    total, rest = 0, str(value)
    for amount, unit in re.findall(r"(\d+)(ms|s|m|h)?", rest):
        total += int(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "": 1}[unit or ""]
    return total


def service_config(workspace, svc, flush):
    proto = f"{workspace}/crates/{svc}-proto/src/lib.rs"
    config = {
        "port": int(grab(proto, r"DEFAULT_PORT: u16 = (\d+);", "DEFAULT_PORT")),
        "grpc_service": grab(proto, r'GRPC_SERVICE: &str = "([^"]+)";', "GRPC_SERVICE"),
        "delay": int(grab(f"{workspace}/crates/grpc-serving/src/config.rs",
                          r"DEFAULT_DRAIN_DELAY_SECS: u64 = (\d+);", "the drain delay")),
        "drain": int(grab(f"{workspace}/crates/grpc-serving/src/config.rs",
                          r"DEFAULT_DRAIN_TIMEOUT_SECS: u64 = (\d+);", "the drain timeout")),
        "cut": int(grab(f"{workspace}/crates/grpc-serving/src/drain.rs",
                        r"CUT_WAIT: Duration = Duration::from_secs\((\d+)\)", "the cut wait")),
        "flush": flush,
    }
    # The answers file of the render that made this service says the same port.
    for path in glob.glob(f"{workspace}/.template-answers/*.toml"):
        with open(path, "rb") as f:
            values = tomllib.load(f).get("values", {})
        same = f"{values.get('proto_package')}.{values.get('service_name')}" == config["grpc_service"]
        if same and int(values["port"]) != config["port"]:
            sys.exit(f"deploy_check: {path} says port {values['port']}, {proto} says {config['port']}")
    return config


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_deployment(svc, cfg, objects, problems):
    deployments = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == svc]
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == svc]
    if len(deployments) != 1 or len(services) != 1:
        problems.append(f"the overlay has {len(deployments)} Deployment(s) and {len(services)} Service(s) named {svc}, not one each")
        return
    pod = deployments[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    if ports.get("grpc") != cfg["port"]:
        problems.append(f"containerPort grpc is {ports.get('grpc')}, the service listens on {cfg['port']}")
    for kind in ("readinessProbe", "livenessProbe"):
        probe = container.get(kind, {}).get("grpc")
        if not probe:
            problems.append(f"{kind} is not a native gRPC probe")
        elif probe.get("port") != cfg["port"]:
            problems.append(f"{kind} probes port {probe.get('port')}, the service listens on {cfg['port']}")
    readiness = container.get("readinessProbe", {}).get("grpc", {}).get("service")
    if readiness != cfg["grpc_service"]:
        problems.append(f"readinessProbe asks for {readiness!r}; only {cfg['grpc_service']!r} turns NOT_SERVING on drain")
    liveness = container.get("livenessProbe", {}).get("grpc", {}).get("service", "")
    if liveness != "":
        problems.append(f"livenessProbe asks for {liveness!r}, not the server as a whole (\"\"): a draining pod would be restarted")
    headless = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == f"{svc}-headless"]
    if len(headless) != 1:
        problems.append(f"the overlay has {len(headless)} Service(s) named {svc}-headless, not one")
    else:
        spec = headless[0]["spec"]
        if spec.get("clusterIP") != "None" or spec.get("publishNotReadyAddresses", False):
            problems.append(f"{svc}-headless must be headless (clusterIP: None) and list ready pods only")
        if not any(p.get("targetPort") in ("grpc", cfg["port"]) for p in spec.get("ports", [])):
            problems.append(f"{svc}-headless targets {[p.get('targetPort') for p in spec.get('ports', [])]}, not the grpc port")
        if spec.get("selector") != services[0]["spec"].get("selector"):
            problems.append(f"{svc}-headless selects {spec.get('selector')}, the Service {services[0]['spec'].get('selector')}")
    env = env_of(container)
    drain = cfg["drain"]
    if "DRAIN_TIMEOUT_SECS" in env:
        drain = int(env["DRAIN_TIMEOUT_SECS"]["value"])
        if drain != cfg["drain"]:
            problems.append(f"DRAIN_TIMEOUT_SECS is {drain}, the server's default {cfg['drain']}: the comments and the README say they match")
    delay = int(env["DRAIN_DELAY_SECS"]["value"]) if "DRAIN_DELAY_SECS" in env else cfg["delay"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    needed = pre_stop + delay + drain + cfg["cut"] + cfg["flush"]
    if grace <= needed:
        problems.append(f"terminationGracePeriodSeconds {grace} is not above preStop {pre_stop} + delay {delay} + drain {drain} + cut {cfg['cut']} + flush {cfg['flush']} = {needed}")
    # Downward API into OTEL_RESOURCE_ATTRIBUTES.
    attributes = dict(
        pair.split("=", 1) for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", {}).get("value", "").split(",") if "=" in pair
    )
    for key, field in K8S_ATTRIBUTES.items():
        ref = re.fullmatch(r"\$\((\w+)\)", attributes.get(key, ""))
        source = env.get(ref.group(1), {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") if ref else None
        if source != field:
            problems.append(f"OTEL_RESOURCE_ATTRIBUTES' {key} is {attributes.get(key)!r}, not the downward API's {field}")
        elif list(env).index(ref.group(1)) > list(env).index("OTEL_RESOURCE_ATTRIBUTES"):
            problems.append(f"{ref.group(1)} is defined after OTEL_RESOURCE_ATTRIBUTES, so $({ref.group(1)}) is not expanded")
    maps = [r["configMapRef"]["name"] for r in container.get("envFrom", []) if "configMapRef" in r]
    endpoints = [
        o["data"].get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] in maps
    ]
    if not endpoints or not all(endpoints):
        problems.append(f"no OTEL_EXPORTER_OTLP_ENDPOINT from a ConfigMap of the overlay (envFrom {maps})")
    elif any(re.search(r"//(localhost|127\.|\[::1\])", e) for e in endpoints):
        problems.append(f"the collector endpoint {endpoints} is localhost: inside a pod that is the pod itself")
    security = container.get("securityContext", {})
    if not (pod.get("securityContext", {}).get("runAsNonRoot") and security.get("readOnlyRootFilesystem")
            and security.get("capabilities", {}).get("drop") == ["ALL"] and security.get("allowPrivilegeEscalation") is False):
        problems.append("the securityContext must run as non-root, read-only, with every capability dropped")
    svc_ports = services[0]["spec"]["ports"]
    if not any(p.get("targetPort") in ("grpc", cfg["port"]) for p in svc_ports):
        problems.append(f"the Service targets {[p.get('targetPort') for p in svc_ports]}, not the grpc port")
    return grace, needed


def check_compose(svc, cfg, compose, problems):
    entry = compose.get("services", {}).get(svc)
    if entry is None:
        problems.append(f"compose.yaml has no service {svc}")
        return
    if entry.get("build", {}).get("args", {}).get("SERVICE") != svc:
        problems.append(f"compose.yaml's {svc} does not build with SERVICE={svc}")
    env = entry.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if not endpoint or re.search(r"//(localhost|127\.|\[::1\])", endpoint):
        problems.append(f"compose.yaml's {svc} sends telemetry to {endpoint!r}: inside compose, name the collector's service")
    delay = int(env.get("DRAIN_DELAY_SECS", cfg["delay"]))
    drain = int(env.get("DRAIN_TIMEOUT_SECS", cfg["drain"]))
    grace = seconds(entry.get("stop_grace_period", 10))
    if grace <= delay + drain + cfg["cut"] + cfg["flush"]:
        problems.append(f"compose.yaml's {svc} stop_grace_period {grace}s is not above delay {delay} + drain {drain} + cut {cfg['cut']} + flush {cfg['flush']}")
    published = [str(p) for p in entry.get("ports", [])]
    if not any(p.split(":")[-1].split("/")[0] == str(cfg["port"]) for p in published):
        problems.append(f"compose.yaml's {svc} publishes {published}, not the service's port {cfg['port']}")


def main():
    workspace, overlay = sys.argv[1:]
    services = sorted(os.path.basename(d)[: -len("-server")] for d in glob.glob(f"{workspace}/crates/*-server"))
    if not services:
        sys.exit(f"deploy_check: no crates/*-server in {workspace}")
    flush = int(grab(f"{workspace}/crates/telemetry/src/lib.rs",
                     r"SHUTDOWN_BUDGET: Duration = Duration::from_secs\((\d+)\)", "the flush budget"))
    with open(overlay) as f:
        objects = [o for o in yaml.safe_load_all(f) if o]
    with open(f"{workspace}/compose.yaml") as f:
        compose = yaml.safe_load(f)
    failed = False
    for svc in services:
        cfg = service_config(workspace, svc, flush)
        problems = []
        timing = check_deployment(svc, cfg, objects, problems)
        check_compose(svc, cfg, compose, problems)
        if not os.path.isfile(f"{workspace}/deploy/{svc}/kustomization.yaml"):
            problems.append(f"no kustomize base deploy/{svc}")
        if problems:
            failed = True
            print(f"{svc}: FAIL")
            for problem in problems:
                print(f"    {problem}")
        else:
            grace, needed = timing
            print(f"{svc}: port {cfg['port']} (container, probes, Service, compose), "
                  f"readiness on {cfg['grpc_service']}, headless {svc}-headless, "
                  f"grace {grace}s > preStop+delay+drain+cut+flush {needed}s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
