#!/usr/bin/env python3
"""A service's crates hold only what is the service's own: checks a rendered workspace for it.

    service_size.py WORKSPACE [--max-lines N] [--first SVC --first-max-lines N] [--min-shared 10]
                    [--fail-on-same]

Prints the lines of Rust of every crate, source and tests apart, and of each service (its
`<svc>-proto`, `<svc>-server` and `<svc>-client`), and lists every Rust file of at least
--min-shared lines that stands byte for byte in two services' crates. Fails when a service's crates
hold more than --max-lines lines of Rust (the workspace's first service, --first, which also holds
the server-stream example and the tests of what every service shares, more than --first-max-lines),
or when a file of the workspace's shared crates (shed.rs, retry.rs, ...) stands in a service's
crates; with --fail-on-same, also on any file in two services (what stays alike is the example
RPC's own: the server's flags of the example and the tests of `ProcessRequest`).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections import defaultdict
from pathlib import Path


def rust_lines(root: Path) -> tuple[int, int]:
    """Lines of Rust under ``root``: (source, tests) — tests are tests/ and benches/."""
    source = tests = 0
    for path in root.rglob("*.rs"):
        if "target" in path.relative_to(root).parts:
            continue
        n = len(path.read_text(errors="replace").splitlines())
        if {"tests", "benches"} & set(path.relative_to(root).parts):
            tests += n
        else:
            source += n
    return source, tests


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workspace", type=Path)
    p.add_argument("--max-lines", type=int, default=1500, help="most lines of Rust per service (default 1500)")
    p.add_argument("--first", help="the workspace's first service (kebab-case), bounded by --first-max-lines")
    p.add_argument("--first-max-lines", type=int, default=3500,
                   help="most lines of Rust of the first service (default 3500)")
    p.add_argument("--min-shared", type=int, default=10,
                   help="a file this long or longer may not stand in two services (default 10)")
    p.add_argument("--fail-on-same", action="store_true", help="fail on any file in two services")
    a = p.parse_args(argv)
    crates = a.workspace / "crates"
    if not crates.is_dir():
        sys.exit(f"service_size: {crates} is not a directory")
    services = sorted(d.name[: -len("-server")] for d in crates.iterdir() if d.name.endswith("-server"))
    problems = []
    total = [0, 0]
    print(f"{'crate':32} {'source':>7} {'tests':>7}")
    per_service: dict[str, int] = {}
    for crate in sorted(d for d in crates.iterdir() if d.is_dir()):
        source, tests = rust_lines(crate)
        total[0] += source
        total[1] += tests
        print(f"{crate.name:32} {source:7} {tests:7}")
        for svc in services:
            if crate.name in (f"{svc}-proto", f"{svc}-server", f"{svc}-client"):
                per_service[svc] = per_service.get(svc, 0) + source + tests
    print(f"{'workspace':32} {total[0]:7} {total[1]:7}")
    for svc, lines in per_service.items():
        print(f"service {svc}: {lines} lines of Rust")
        limit = a.first_max_lines if svc == a.first else a.max_lines
        if lines > limit:
            problems.append(f"service {svc} has {lines} lines of Rust, more than {limit}")

    # The same file, byte for byte, in two services' crates.
    by_hash: dict[str, list[Path]] = defaultdict(list)
    for svc in services:
        for kind in ("proto", "server", "client"):
            for path in (crates / f"{svc}-{kind}").rglob("*.rs"):
                text = path.read_bytes()
                if len(text.splitlines()) >= a.min_shared:
                    by_hash[hashlib.sha256(text).hexdigest()].append(path.relative_to(a.workspace))
    same = []
    for paths in by_hash.values():
        owners = {p.parts[1].rsplit("-", 1)[0] for p in paths}
        if len(owners) > 1:
            same.append("the same file in two services: " + ", ".join(map(str, paths)))
    for line in same:
        print(("FAIL " if a.fail_on_same else "note ") + line)
    if a.fail_on_same:
        problems += same
    # The shared crates' files: none of them may come back into a service.
    shared_names = {path.name for shared in crates.iterdir()
                    if shared.is_dir() and not any(shared.name == f"{svc}-{kind}" for svc in services
                                                   for kind in ("proto", "server", "client"))
                    for path in (shared / "src").rglob("*.rs") if path.name not in ("lib.rs", "main.rs")}
    for svc in services:
        for kind in ("server", "client"):
            for path in (crates / f"{svc}-{kind}" / "src").rglob("*.rs"):
                if path.name in shared_names and path.name not in ("config.rs",):
                    problems.append(f"{path.relative_to(a.workspace)}: a shared crate has a file of that name")
    for problem in problems:
        print(f"FAIL {problem}")
    if not problems:
        print(f"ok: {len(services)} service(s), each added one at most {a.max_lines} lines of Rust, none "
              f"of the shared crates' files in a service")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
