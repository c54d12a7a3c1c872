#!/usr/bin/env bash
# Every test of the template, as CI runs it (.ci/run calls this): installs what is missing, checks
# the placeholders, runs the READMEs' command that adds a service without a terminal, renders every
# variant outside the repository (the default, HTTP/protobuf with other names, a workspace with a
# second service added), fails on any difference from examples/,
# checks each one's Dockerfile, Kubernetes manifests, compose file and workflow (ci/deploy-check.sh),
# builds each with warnings as errors, lints, tests, checks that a service holds only its own code
# (ci/service_size.py), that an RPC is added with two edits (ci/add-rpc.sh) and that a workspace
# follows a newer template (ci/update-template.sh), and runs the end-to-end scenarios against a real
# collector.
# Environment: CI_WORK (renders, logs), CARGO_TARGET_DIR (shared by all renders),
# E2E=0 to skip the end-to-end scenarios, BENCH=0 to skip the quick benchmark run, ADVISORY_FETCH=0
# to check advisories against the snapshot without trying to fetch the RustSec database.
# The last lines say what advisories were checked against, or `advisories: not checked`.
source "$(dirname "$0")/lib.sh"
started=$SECONDS
steps=0
# Counts a finished step; any failure stops the script (set -e), so the count is of passes.
passed() { steps=$((steps + 1)); }
trap 'echo "template checks: $steps passed, 1 failed"' ERR
# What cargo-deny checked advisories against, per render (ci/check-render.sh appends to it).
rm -f "$ADVISORY_REPORT"

step "tools"
ensure_cargo_generate
ensure_rotel
ensure_h2load
ensure_haproxy
# The Python grpclib reference service, which e2e scenario 9 (python) calls and is called by.
ensure_python_reference_venv
ensure_compose
ensure_hadolint
ensure_kubernetes_validate
ensure_actionlint
ensure_kubectl
"$CARGO_GENERATE" --version
"$HADOLINT" --version
"$ACTIONLINT" --version | sed -n 1p
echo "kubernetes-validate $KUBERNETES_VALIDATE_PIN"
"$KUBECTL" version --client | sed -n 1,2p
rustc --version

step "harness unit tests"
"$ROTEL_VENV/bin/python" -m unittest discover -s "$REPO/ci/e2e" -p 'test_*.py'
"$ROTEL_VENV/bin/python" -m unittest discover -s "$REPO/ci/bench" -p 'test_*.py'
"$ROTEL_VENV/bin/python" -m unittest discover -s "$REPO/ci" -p 'test_*.py'
passed

step "placeholder validation"
timed bash "$REPO/ci/placeholders.sh"
passed

step "fork workflow: favorites render a house workspace and add a service"
timed bash "$REPO/ci/favorites.sh"
passed

step "adding a service refuses where it cannot work, writing nothing"
timed bash "$REPO/ci/add-service.sh"
passed

step "the documented command that adds a service works as written, without a terminal (ci/init-doc.sh)"
timed bash "$REPO/ci/init-doc.sh"
passed

step "documents: every link and path in them exists (ci/check_links.py)"
python3 "$REPO/ci/check_links.py" "$REPO"
passed

step "variants: render each of ci/variants/ outside the repository, compare with examples/, check the deployment files, build, lint, test"
timed bash "$REPO/ci/variants.sh"
passed
default=$WORK/variants/default/acme

step "a service holds only its own code: lines of Rust per service, none of the shared crates' files in one"
# An added service starts from the unary example alone: 1,500 lines at most. The first service also
# holds the server-stream example and the tests of what every service shares: 3,500.
python3 "$REPO/ci/service_size.py" "$WORK/variants/two-services/shop" --first my-service --first-max-lines 3500 --max-lines 1500
passed

step "adding an RPC is two edits: one rpc line, one handler method (ci/add-rpc.sh)"
timed bash "$REPO/ci/add-rpc.sh"
passed

step "a workspace follows its template: scripts/update-template merges a newer template, keeps the team's edits (ci/update-template.sh)"
timed bash "$REPO/ci/update-template.sh"
passed

step "the same render through --git"
(cd "$WORK" && rm -rf via-git && mkdir via-git && cd via-git \
    && CARGO_NAME="Template CI" CARGO_EMAIL="ci@example.invalid" \
        "$CARGO_GENERATE" generate --git "$REPO" --name acme --silent --vcs none >/dev/null)
diff -r "$REPO/examples/default" "$WORK/via-git/acme" || die "the --git render differs from the --path render"
echo "identical to the --path render"
passed

# A newer cargo-generate, where one is installed, must render the same files (CI proves the pin).
if [[ -n ${CARGO_GENERATE_LATEST:-} && -x $CARGO_GENERATE_LATEST ]]; then
    step "cross-check with $("$CARGO_GENERATE_LATEST" --version)"
    CARGO_GENERATE=$CARGO_GENERATE_LATEST RENDER_ONLY=1 CI_WORK=$WORK/latest bash "$REPO/ci/variants.sh"
    passed
fi

if [[ ${E2E:-1} != 0 ]]; then
    step "end to end against rotel (release build)"
    (cd "$default" && RUSTFLAGS="${RUSTFLAGS:-} -D warnings" timed cargo build --locked --release)
    timed "$ROTEL_VENV/bin/python" "$REPO/ci/e2e/run_all.py" --bin-dir "$CARGO_TARGET_DIR/release"
    passed

    # What a user does after `cargo build`: one set of features for the whole workspace means
    # `cargo run -p <service>-server` (or -client) compiles nothing again.
    step "one package built after the workspace compiles nothing again (cargo build, then -p each binary)"
    for package in my-service-server my-service-client; do
        (cd "$default" && RUSTFLAGS="${RUSTFLAGS:-} -D warnings" \
            cargo build --locked --release -p "$package" --message-format=json 2>/dev/null) |
            python3 "$REPO/ci/fresh_build.py" "$package"
    done
    passed

    step "the demo shows a trace tree, the service's own metrics and correlated logs (ci/demo.py on the release build)"
    timed "$ROTEL_VENV/bin/python" "$REPO/ci/demo_check.py" --bin-dir "$CARGO_TARGET_DIR/release" --workdir "$WORK/demo"
    passed

    step "the client CLI at a terminal (pseudo-terminal): readable lines, one delivery warning, exit ~1 s after the answer"
    timed "$ROTEL_VENV/bin/python" "$REPO/ci/cli_tty_check.py" --bin-dir "$CARGO_TARGET_DIR/release"
    passed
fi

if [[ ${BENCH:-1} != 0 ]]; then
    # A short run proves the benchmark works (every call OK, every span received or counted as
    # dropped); it asserts no time: CI machines are shared and noisy.
    step "benchmark, quick (ci/bench.sh --quick; asserts no time)"
    # Same RUSTFLAGS as the release build above, so its artifacts are reused.
    BENCH_RENDER=$default RUSTFLAGS="${RUSTFLAGS:-} -D warnings" \
        timed bash "$REPO/ci/bench.sh" --quick --direct --shapes 0ms,1000rps,serial
    passed
fi

# Passing is not the same as checking: say when the advisories were not checked.
skipped=
if [[ ! -f $ADVISORY_REPORT ]]; then
    advisories="advisories: not checked (cargo-deny did not run)"
    skipped=", 1 skipped"
elif grep -q 'advisories not checked' "$ADVISORY_REPORT"; then
    advisories="advisories: not checked (no RustSec database could be fetched and there is no snapshot at $ADVISORY_SNAPSHOT)"
    skipped=", 1 skipped"
else
    advisories="advisories: checked against $(sed -n '$s/^[^:]*: advisories checked against //p' "$ADVISORY_REPORT")"
fi
printf '\nall template checks passed in %ds; %s\n' $((SECONDS - started)) "$advisories"
echo "template checks: $steps passed, 0 failed$skipped"
