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
    if ensure_advisory_db; then
        # The render's own policy, pointed at the local advisory snapshot.
        sed "s|^\[advisories\]$|[advisories]\ndb-path = \"$ADVISORY_DB_PATH\"|" deny.toml >"$WORK/deny-ci.toml"
        timed "$CARGO_DENY" --offline --config "$WORK/deny-ci.toml" check
    else
        # This machine reaches no advisory database: the other three checks still run.
        echo "no advisory database snapshot at $ADVISORY_SNAPSHOT: advisories not checked"
        timed "$CARGO_DENY" --offline check bans licenses sources
    fi
fi
step "$(basename "$dir"): test"
timed cargo test --locked
