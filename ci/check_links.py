#!/usr/bin/env python3
"""Fails on a link or a path in a document that does not exist.

    check_links.py [REPO]

Reads the repository's own documents (every *.md outside template/ and examples/) against the
repository's root, and each committed render's documents (examples/<variant>/**/*.md, the template's
documents as a user reads them) against that render's root. Checked: every relative Markdown link
`[text](target)` (against the document's folder; `#anchors` and URLs are not followed), and every
`backticked` path that starts with a top-level folder of the tree it is read against (`ci/...`,
`crates/...`) and names no placeholder (`<service>`, `{{...}}`, `*`).
"""

from __future__ import annotations

import re
import sys
from functools import cache
from pathlib import Path

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\s]+)`")


def candidates(text: str) -> tuple[list[str], list[str]]:
    """The relative link targets and the backticked tokens of a document, outside fenced code."""
    links, paths = [], []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#"):
                links.append(target.split("#", 1)[0])
        paths.extend(CODE.findall(line))
    return links, paths


@cache
def top_folders(root: Path) -> frozenset[str]:
    """The top-level folders of a tree: a backticked path starting with one is checked."""
    return frozenset(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def check(doc: Path, root: Path, problems: list[str]) -> None:
    links, tokens = candidates(doc.read_text(errors="replace"))
    tops = top_folders(root)
    for target in links:
        if target and not (doc.parent / target).exists():
            problems.append(f"{doc}: link to {target}, which does not exist")
    for token in tokens:
        token = token.rstrip(".,:;")
        if any(c in token for c in "<>{}*$?()=|") or "/" not in token or "://" in token:
            continue
        if token.split("/", 1)[0] not in tops:
            continue
        path = token.split(":", 1)[0]  # file:line
        if not (root / path).exists():
            problems.append(f"{doc}: path {token}, which does not exist under {root}")


def main(argv: list[str]) -> int:
    repo = Path(argv[0] if argv else Path(__file__).resolve().parent.parent)
    problems: list[str] = []
    documents = 0
    for doc in sorted(repo.rglob("*.md")):
        rel = doc.relative_to(repo)
        if rel.parts[0] in ("template", "target", ".git") or "testdata" in rel.parts:
            continue
        if rel.parts[0] == "examples":
            if len(rel.parts) < 3:
                continue
            check(doc, repo / "examples" / rel.parts[1], problems)
        else:
            check(doc, repo, problems)
        documents += 1
    for problem in problems:
        print(f"FAIL {problem}")
    if problems:
        return 1
    print(f"ok: every link and path in {documents} documents exists")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
