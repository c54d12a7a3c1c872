#!/usr/bin/env bash
# The example flow on a fresh machine: renders a service into a temporary directory, builds it,
# starts a real OpenTelemetry collector (rotel, from PyPI, no Docker) on free ports, runs the server
# and a few client calls against it (one failing), and prints what arrived: each call's trace as a
# tree, the metrics with their values, the log records beside the matching stdout JSON lines
# (ci/demo.py). Every process it starts is stopped on exit and on Ctrl-C.
#
# Uses any installed cargo-generate the template supports (>=0.23.14, <0.27.0); installs 0.23.14
# only when there is none. DEMO_DIR=<dir> renders there instead of a fresh temporary directory.
source "$(dirname "$0")/lib.sh"
start=$SECONDS
ensure_cargo_generate any
ensure_rotel
dest=${DEMO_DIR:-$(mktemp -d)}
mkdir -p "$dest"
step "rendering into $dest/demo"
rm -rf "${dest:?}/demo"
(cd "$dest" && "$CARGO_GENERATE" generate --path "$REPO" --name demo --silent --vcs none >/dev/null)
cd "$dest/demo"
step "building (a first build takes about 2 minutes on 2 cores; later ones 15-35 s: the render is new, its crates rebuild)"
timed cargo build --locked --quiet --bins
bin=$CARGO_TARGET_DIR/debug

pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
# In the background so that this shell's trap runs on Ctrl-C; demo.py stops its own children.
"$ROTEL_VENV/bin/python" "$REPO/ci/demo.py" --server-bin "$bin/my-service-server" \
    --client-bin "$bin/my-service-client" --workdir "$dest/run" --workspace "$dest/demo" &
pid=$!
status=0
wait "$pid" || status=$?
pid=
printf '\nrendered workspace: %s/demo; the run'"'"'s files (server stdout, rotel log): %s/run; demo took %ds\n' \
    "$dest" "$dest" $((SECONDS - start))
exit "$status"
