#!/usr/bin/env bash
# Builds, lints and tests one rendered workspace as CI does: warnings are errors.
# Usage: ci/check-render.sh DIR
source "$(dirname "$0")/lib.sh"
dir=${1:?usage: ci/check-render.sh DIR}
cd "$dir"
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
step "$(basename "$dir"): build (-D warnings, --locked)"
timed cargo build --locked --all-targets
step "$(basename "$dir"): clippy"
timed cargo clippy --locked --all-targets -- -D warnings
step "$(basename "$dir"): fmt"
cargo fmt --check
step "$(basename "$dir"): test"
timed cargo test --locked
