"""Deterministic mutations of the W3C trace-context and baggage headers, and a model of what
the service should make of each traceparent.

Every mutation is a :class:`Mutation` (a name, the headers to send, and the expected parent of
the server span); the same seed always gives the same list.  Values only use characters an
HTTP/2 field value may carry: visible ASCII, interior spaces and tabs, and a few obs-text bytes
(>= 0x80); never CR, LF or NUL, and never leading or trailing whitespace.  Sizes stay under the
server's advertised 16 KiB header list limit (SETTINGS_MAX_HEADER_LIST_SIZE), except the one
mutation named ``oversize-*``, which is expected to be refused at the HTTP/2 layer.

The traceparent model is the server's: ``telemetry::grpc::server::well_formed_traceparent``
(2/32/16/2 lowercase hex digits, version ff invalid, version 00 exactly four fields) in front of
the SDK's TraceContextPropagator (all-zero ids invalid; only the sampled bit of the flags kept),
behind ``http::HeaderValue::to_str`` (only visible ASCII and tab).  An accepted, sampled parent
must become the server span's parent; an accepted, unsampled one means no exported span
(parent-based sampling); anything else must start a new trace.
"""

from __future__ import annotations

import dataclasses
import random
import re

VALID_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID_PARENT_ID = "00f067aa0ba902b7"
VALID_TP = f"00-{VALID_TRACE_ID}-{VALID_PARENT_ID}-01"
VALID_TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
VALID_BAGGAGE = "userId=alice,serverNode=DF%2028,isProduction=false"

HEADER_LIST_LIMIT = 16 * 1024  # what the server advertises
PRINTABLE = "".join(chr(c) for c in range(0x21, 0x7F))
_LOWER_HEX = re.compile(r"^[0-9a-f]+$")


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What the server should make of a traceparent."""

    parent: bool  # the server span continues the given trace
    sampled: bool = True  # with parent: whether a span is exported at all
    trace_id: str | None = None
    parent_id: str | None = None


NEW_TRACE = Expectation(parent=False)


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    headers: tuple[tuple[str, str], ...]
    expect: Expectation | None  # None: do not check the parent (e.g. duplicated headers)
    oversize: bool = False

    def header_bytes(self) -> int:
        # HPACK's accounting: name + value + 32 per field
        return sum(len(k) + len(v.encode()) + 32 for k, v in self.headers)


def _hex(field: str, n: int) -> bool:
    return len(field) == n and bool(_LOWER_HEX.match(field))


def expected_parent(value: str) -> Expectation:
    """The server's view of one traceparent value (see the module docstring)."""
    if any(not (0x20 <= ord(ch) < 0x7F or ch == "\t") for ch in value):
        return NEW_TRACE  # HeaderValue::to_str fails: the header is as good as absent
    v = value.strip(" \t")
    fields = v.split("-")
    strict = (len(fields) >= 4 and _hex(fields[0], 2) and fields[0] != "ff"
              and (fields[0] != "00" or len(fields) == 4)
              and _hex(fields[1], 32) and _hex(fields[2], 16) and _hex(fields[3], 2))
    if not strict:
        return NEW_TRACE
    if fields[1] == "0" * 32 or fields[2] == "0" * 16:
        return NEW_TRACE
    return Expectation(parent=True, sampled=bool(int(fields[3], 16) & 1), trace_id=fields[1], parent_id=fields[2])


def _random_value(rng: random.Random, n: int, alphabet: str = PRINTABLE + " ") -> str:
    s = "".join(rng.choice(alphabet) for _ in range(n))
    s = s.strip(" \t")
    return s or "x"


def traceparent_values(rng: random.Random) -> list[tuple[str, str]]:
    """(name, value) pairs: systematic mutations of VALID_TP, then random ones."""
    tp = VALID_TP
    out: list[tuple[str, str]] = [("valid", tp), ("valid-unsampled", tp[:-2] + "00"), ("flags-ff", tp[:-2] + "ff")]
    for n in (1, 2, 3, 10, 35, 36, 52, 53, 54):
        out.append((f"truncated-{n}", tp[:n]))
    fields = tp.split("-")
    for i, width in enumerate((2, 32, 16, 2)):
        longer = fields.copy()
        longer[i] = fields[i] + "a"
        shorter = fields.copy()
        shorter[i] = fields[i][:-1] if width > 1 else ""
        out.append((f"field{i}-too-long", "-".join(longer)))
        out.append((f"field{i}-too-short", "-".join(shorter)))
        upper = fields.copy()
        upper[i] = ("ab" if i in (0, 3) else fields[i][:-2] + "ab").upper()
        out.append((f"field{i}-uppercase", "-".join(upper)))
        for bad in ("g", "z", ".", " ", "_", "+"):
            nonhex = fields.copy()
            # replace an inner digit, so that a space is never leading or trailing
            nonhex[i] = fields[i][:-1] + bad if i == 0 else bad + fields[i][1:]
            out.append((f"field{i}-nonhex-{bad!r}", "-".join(nonhex)))
    out += [
        ("uppercase-all", tp.upper()),
        ("no-dashes", tp.replace("-", "")),
        ("underscores", tp.replace("-", "_")),
        ("extra-dash", tp.replace("-", "--", 1)),
        ("trailing-dash", tp + "-"),
        ("version-ff", "ff" + tp[2:]),
        ("version-01", "01" + tp[2:]),
        ("version-01-extra", "01" + tp[2:] + "-what-ever"),
        ("version-00-extra", tp + "-00"),
        ("version-cc-extra", "cc" + tp[2:] + "-" + "x" * 40),
        ("version-1-digit", "0" + tp[2:]),
        ("zero-trace-id", f"00-{'0' * 32}-{VALID_PARENT_ID}-01"),
        ("zero-parent-id", f"00-{VALID_TRACE_ID}-{'0' * 16}-01"),
        ("all-zero", f"00-{'0' * 32}-{'0' * 16}-00"),
        ("flags-1-digit", tp[:-2] + "1"),
        ("flags-3-digits", tp[:-2] + "011"),
        ("interior-space", tp.replace("-", " -", 1)),
        ("tab-inside", tp.replace("-", "\t-", 1)),
        ("just-dashes", "---"),
        ("dash", "-"),
        ("comma-list", f"{tp},{tp}"),
        ("json", '{"traceparent":"' + tp + '"}'),
        ("huge-extra-v01", "01" + tp[2:] + "-" + "f" * 7900),
        ("huge-garbage", _random_value(rng, 7900)),
        ("huge-hex-trace-id", f"00-{'a' * 4000}-{VALID_PARENT_ID}-01"),
        ("obs-text", tp[:20] + "\u00e9\u00ff" + tp[22:]),
        ("obs-text-only", "\u00e9\u00e8\u00ea"),
    ]
    for i in range(30):
        out.append((f"random-{i}", _random_value(rng, rng.choice((1, 5, 20, 55, 56, 120, 300)))))
    for i in range(8):
        # random hex-ish lookalikes: right shape, random content from a hostile alphabet
        alpha = "0123456789abcdefABCDEF-xz "
        out.append((f"lookalike-{i}", "00-" + _random_value(rng, 32, alpha) + "-" + _random_value(rng, 16, alpha) + "-01"))
    for i in range(6):
        # random valid ones: must be continued
        tid = "".join(rng.choice("0123456789abcdef") for _ in range(32))
        pid = "".join(rng.choice("0123456789abcdef") for _ in range(16))
        out.append((f"random-valid-{i}", f"00-{tid}-{pid}-01"))
    return out


def tracestate_values(rng: random.Random) -> list[tuple[str, str]]:
    out = [
        ("valid", VALID_TRACESTATE),
        ("empty-members", ",,,"),
        ("equals", "="),
        ("no-value", "a="),
        ("no-key", "=b"),
        ("uppercase-key", "ABC=1"),
        ("key-256", "k" * 256 + "=1"),
        ("key-257", "k" * 257 + "=1"),
        ("members-33", ",".join(f"k{i}=v{i}" for i in range(33))),
        ("members-32", ",".join(f"k{i}=v{i}" for i in range(32))),
        ("value-with-equals", "a=b=c"),
        ("tenant", "t@s=1"),
        ("tenant-twice", "t@@s=1"),
        ("duplicate-keys", "a=1,a=2"),
        ("spaces", "a = 1 , b= 2"),
        ("value-257", "a=" + "v" * 257),
        ("huge", ",".join(f"key{i}=" + "v" * 200 for i in range(38))),
        ("obs-text", "a=\u00e9"),
        ("json", '{"a":1}'),
        ("semicolons", "a=1;b=2"),
    ]
    for i in range(40):
        out.append((f"random-{i}", _random_value(rng, rng.choice((1, 8, 40, 200, 1000)))))
    return out


def baggage_values(rng: random.Random) -> list[tuple[str, str]]:
    out = [
        ("valid", VALID_BAGGAGE),
        ("equals", "="),
        ("key-only", "k"),
        ("no-value", "k="),
        ("no-key", "=v"),
        ("property", "k=v;prop"),
        ("properties", "k=v;p=1;q"),
        ("bad-percent-key", "%zz=1"),
        ("bad-percent-value", "k=%zz"),
        ("percent-utf8", "k=%C3%A9"),
        ("percent-invalid-utf8", "k=%ff%fe"),
        ("members-200", ",".join(f"k{i}=v{i}" for i in range(200))),
        ("bytes-8192", "k=" + "v" * 8190),
        ("bytes-9000", "k=" + "v" * 8998),
        ("duplicate", "k=v,k=v2"),
        ("spaces", "k = v , j = w"),
        ("obs-text", "k=\u00e9\u00e8"),
        ("commas", ",,,,"),
        ("semicolons", ";;;;"),
        ("json", '{"k":"v"}'),
    ]
    for i in range(40):
        out.append((f"random-{i}", _random_value(rng, rng.choice((1, 8, 40, 200, 1000)))))
    return out


def generate(seed: int = 20261123) -> list[Mutation]:
    """Every mutation, in a fixed order; ``seed`` fixes the random ones."""
    rng = random.Random(seed)
    out: list[Mutation] = []
    for name, v in traceparent_values(rng):
        out.append(Mutation(f"traceparent/{name}", (("traceparent", v),), expected_parent(v)))
    valid = expected_parent(VALID_TP)
    for name, v in tracestate_values(rng):
        # a bad tracestate is dropped; the (valid) traceparent still counts
        out.append(Mutation(f"tracestate/{name}", (("traceparent", VALID_TP), ("tracestate", v)), valid))
    for name, v in baggage_values(rng):
        out.append(Mutation(f"baggage/{name}", (("traceparent", VALID_TP), ("baggage", v)), valid))
    tps = traceparent_values(random.Random(seed + 1))
    tss = tracestate_values(random.Random(seed + 2))
    bgs = baggage_values(random.Random(seed + 3))
    for i in range(40):
        (tn, tv), (sn, sv), (bn, bv) = rng.choice(tps), rng.choice(tss), rng.choice(bgs)
        m = Mutation(f"combo-{i}/{tn}+{sn}+{bn}", (("traceparent", tv), ("tracestate", sv), ("baggage", bv)),
                     expected_parent(tv))
        if m.header_bytes() < HEADER_LIST_LIMIT - 1024:
            out.append(m)
    out.append(Mutation("traceparent/duplicated", (("traceparent", VALID_TP), ("traceparent", "garbage")), None))
    out.append(Mutation("traceparent/duplicated-garbage-first", (("traceparent", "garbage"), ("traceparent", VALID_TP)), None))
    out.append(Mutation("oversize-baggage", (("traceparent", VALID_TP), ("baggage", "k=" + "v" * 20000)), None,
                        oversize=True))
    names = [m.name for m in out]
    assert len(names) == len(set(names)), "mutation names must be unique"
    for m in out:
        for k, v in m.headers:
            assert "\r" not in v and "\n" not in v and "\0" not in v, m.name
            assert v == v.strip(" \t") and v, m.name
        assert m.oversize or m.header_bytes() < HEADER_LIST_LIMIT - 512, m.name
    return out
