#!/usr/bin/env bash
# The performance benchmark: renders the default service, release-builds it and a bare tonic server
# with the same proto (ci/bench/bare-server), then drives both with h2load against a real
# collector (ci/bench/bench.py: req/s, p50/p99, server CPU µs per call, spans received versus
# calls served, medians over alternating rounds).
# With --reference it also drives the Python grpclib reference service (ci/bench/python-reference: grpclib and the OpenTelemetry
# Python SDK, installed by ensure_python_reference_venv) exporting the same way, and prints full/python.
# Usage: ci/bench.sh [bench.py options]     e.g. ci/bench.sh --rounds 5, ci/bench.sh --quick
# The full run (every contender, every shape, the reference service too): ci/bench.sh --reference
# Environment: BENCH_RENDER=DIR benchmarks an existing render instead of a fresh default one.
source "$(dirname "$0")/lib.sh"
ensure_rotel
ensure_h2load
[[ " $* " == *" --reference "* ]] && ensure_python_reference_venv
if [[ -n ${BENCH_RENDER:-} ]]; then
    render_dir=$BENCH_RENDER
else
    ensure_cargo_generate
    render "$WORK/bench" acme
    render_dir=$WORK/bench/acme
fi
# The bare server builds inside the render so it uses the render's proto crate and Cargo.lock.
rm -rf "$render_dir/crates/bare-server"
cp -r "$REPO/ci/bench/bare-server" "$render_dir/crates/bare-server"
step "release build of the render and the bare server"
(cd "$render_dir" && timed cargo build --release --quiet -p my-service-server -p bare-server)
step "benchmark (server on CPU 0, load and collector on the others)"
"$ROTEL_VENV/bin/python" "$REPO/ci/bench/bench.py" --bin-dir "$CARGO_TARGET_DIR/release" "$@"
