#!/usr/bin/env python3
"""Fails when a cargo build compiled anything: reads `cargo build --message-format=json` on stdin.

    cargo build --release -p my-service-server --message-format=json | python3 ci/fresh_build.py my-service-server

ci/test.sh runs it after the workspace's build, for each service's server and client: one set of
features for the whole workspace means that building one package after it compiles nothing again.
"""

from __future__ import annotations

import json
import sys


def compiled(lines) -> tuple[list[str], int, bool]:
    """The artifacts cargo compiled (not fresh), how many were fresh, and whether the build succeeded."""
    rebuilt, fresh, success = [], 0, False
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact":
            if msg.get("fresh"):
                fresh += 1
            else:
                rebuilt.append(f'{msg["target"]["name"]} ({msg["package_id"]})')
        elif msg.get("reason") == "build-finished":
            success = bool(msg.get("success"))
    return rebuilt, fresh, success


def main(argv: list[str]) -> int:
    what = argv[1] if len(argv) > 1 else "the package"
    rebuilt, fresh, success = compiled(sys.stdin)
    if not success:
        print(f"{what}: the build failed", file=sys.stderr)
        return 1
    if rebuilt:
        print(f"{what}: building it after the workspace compiled {len(rebuilt)} crates again "
              "(their features differ when it is built alone):", file=sys.stderr)
        for name in rebuilt:
            print(f"  {name}", file=sys.stderr)
        return 1
    print(f"{what}: nothing compiled again ({fresh} artifacts fresh)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
