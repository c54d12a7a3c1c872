"""Assertion collector for scenario scripts: record every failed expectation instead of stopping
at the first, print them clearly, and turn them into the exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any


class Checks:
    def __init__(self, out=sys.stdout) -> None:
        self.failures: list[str] = []
        self.passed: list[str] = []
        self.out = out

    def section(self, title: str) -> None:
        print(title, file=self.out)

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed.append(what)
            print(f"  ok    {what}", file=self.out)
        else:
            msg = f"{what}" + (f": {detail}" if detail else "")
            self.failures.append(msg)
            print(f"  FAIL  {msg}", file=self.out)
        return ok

    def equal(self, actual: Any, expected: Any, what: str) -> bool:
        return self.check(actual == expected, f"{what} == {expected!r}", f"got {actual!r}")

    def empty(self, items: Iterable[Any], what: str, show: int = 5) -> bool:
        items = list(items)
        detail = ""
        if items:
            shown = "; ".join(str(i) for i in items[:show])
            detail = f"{len(items)} offending: {shown}" + (" ..." if len(items) > show else "")
        return self.check(not items, what, detail)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self, title: str) -> int:
        if self.failures:
            print(f"\n{title}: FAILED ({len(self.failures)} of {len(self.failures) + len(self.passed)} checks)")
            for f in self.failures:
                print(f"  - {f}")
            return 1
        print(f"\n{title}: PASSED ({len(self.passed)} checks)")
        return 0


def dump_json(path, data: Any) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
