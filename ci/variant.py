#!/usr/bin/env python3
"""Prints the shell words that render one variant file (ci/variants/*.toml): the project name,
the cargo-generate --define arguments of the workspace render, and those of each added service.

    variant.py FILE name            -> acme
    variant.py FILE defines         -> --define k=v ... (one word per line)
    variant.py FILE adds            -> the names of the services to add, one per line
    variant.py FILE add-defines NAME
"""
import sys
import tomllib


def defines(values):
    for key, value in values.items():
        print("--define")
        print(f"{key}={value}")


def main():
    path, what, *rest = sys.argv[1:]
    with open(path, "rb") as f:
        variant = tomllib.load(f)
    if what == "name":
        print(variant["name"])
    elif what == "defines":
        defines(variant.get("values", {}))
    elif what == "adds":
        for add in variant.get("add", []):
            print(add["name"])
    elif what == "add-defines":
        (add,) = [a for a in variant.get("add", []) if a["name"] == rest[0]]
        defines(add.get("values", {}))
    else:
        sys.exit(f"unknown request {what!r}")


if __name__ == "__main__":
    main()
