#!/usr/bin/env bash
# Builds, lints and tests one rendered workspace as CI does: warnings are errors.
# Usage: ci/check-render.sh DIR
source "$(dirname "$0")/lib.sh"
dir=${1:?usage: ci/check-render.sh DIR}
cd "$dir"
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
# A service added with --init brings crates the committed Cargo.lock does not list yet: cargo adds
# them on the first build. Allow that, and only that: no locked dependency may change.
if ! cargo metadata --locked --format-version 1 >/dev/null 2>&1; then
    cp Cargo.lock "$WORK/Cargo.lock.before"
    cargo metadata --format-version 1 >/dev/null
    python3 - "$WORK/Cargo.lock.before" Cargo.lock <<'PY'
import sys, tomllib
before, after = ({(p["name"], p["version"], p.get("source")) for p in tomllib.load(open(f, "rb"))["package"]} for f in sys.argv[1:])
changed = sorted(before - after)
added = sorted(after - before)
if changed or any(source for _, _, source in added):
    sys.exit(f"Cargo.lock changed beyond the new local crates: removed {changed}, added {added}")
print("Cargo.lock gained the new local crates:", ", ".join(name for name, _, _ in added))
PY
fi
step "$(basename "$dir"): build (-D warnings, --locked)"
timed cargo build --locked --all-targets
step "$(basename "$dir"): clippy"
timed cargo clippy --locked --all-targets -- -D warnings
step "$(basename "$dir"): fmt"
cargo fmt --check
if [[ -f compose.yaml ]]; then
    step "$(basename "$dir"): compose.yaml parses"
    ensure_compose
    "${COMPOSE[@]}" -f compose.yaml config -q
fi
if [[ -f deny.toml && ${DENY:-1} == 1 ]]; then
    step "$(basename "$dir"): cargo deny (licences, bans, sources, advisories)"
    ensure_cargo_deny
    # --offline also makes cargo metadata offline, so every platform's crates are fetched first.
    cargo fetch --locked >/dev/null
    # -L error: failures in full, warnings (two versions of a crate, with their inclusion trees:
    # thousands of lines) only counted in --show-stats' one line per check.
    mkdir -p "$WORK"
    if ensure_advisory_db; then
        echo "advisories against $ADVISORY_DB_SOURCE"
        # The render's own policy, pointed at that database.
        sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$ADVISORY_DB_PATH\"|" deny.toml >"$WORK/deny-ci.toml"
        timed "$CARGO_DENY" -L error --offline --config "$WORK/deny-ci.toml" check --show-stats
        echo "$(basename "$dir"): advisories checked against $ADVISORY_DB_SOURCE" >>"$ADVISORY_REPORT"
    else
        # Neither the database nor a snapshot is here: the other three checks still run, and the
        # summary of ci/test.sh says advisories were not checked.
        echo "advisories: not checked (the RustSec database cannot be fetched here, see $WORK/advisory-fetch.log, and there is no snapshot at $ADVISORY_SNAPSHOT)"
        timed "$CARGO_DENY" -L error --offline check --show-stats bans licenses sources
        echo "$(basename "$dir"): advisories not checked" >>"$ADVISORY_REPORT"
    fi
fi
step "$(basename "$dir"): test"
timed cargo test --locked
