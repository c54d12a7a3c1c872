#!/usr/bin/env bash
# Adding an RPC takes two edits: one `rpc` line in the service's proto and one method in its
# handler. This makes exactly those two edits on a fresh render, then proves nothing else is
# needed: every target builds with warnings as errors, clippy is clean, the service's tests pass,
# and the new method is served, traced and measured (ci/e2e/scenario_new_rpc.py against a real
# collector).
# The render is the default workspace (acme) with a service of another name, Ledger: the shared
# crates come out byte for byte as in the default render, and the service's crates have names of
# their own, so the edited proto never stands in for another render's in the shared target
# directory (cargo hashes a path crate by its path inside the workspace, and would take a build
# script's output as fresh for another render's older, unchanged proto).
# Usage: ci/add-rpc.sh
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
dest=$WORK/add-rpc
rm -rf "$dest"
mkdir -p "$dest"
(cd "$dest" && CARGO_NAME="Template CI" CARGO_EMAIL="ci@example.invalid" \
    "$CARGO_GENERATE" generate --path "$REPO" --name acme --define service_name=Ledger \
    --silent --vcs none >/dev/null)
cd "$dest/acme"
service=ledger
proto=$(find "crates/$service-proto/proto" -name '*.proto' | head -1)
handler=crates/$service-server/src/service.rs

# Edit 1: the rpc line, after the last one of the service.
python3 - "$proto" <<'PY'
import re, sys
path = sys.argv[1]
text = open(path).read()
last = list(re.finditer(r"^  rpc .*$", text, re.M))[-1]
line = ("\n  // Looks a request up; changes nothing, so the client may retry it.\n"
        "  rpc LookupRequest(MyRequest) returns (MyResponse) { option idempotency_level = NO_SIDE_EFFECTS; }")
open(path, "w").write(text[: last.end()] + line + text[last.end():])
PY
# Edit 2: its method, in the handler's `impl proto::Service`.
python3 - "$handler" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
anchor = "impl proto::Service for Handler {\n"
if anchor not in text:
    sys.exit(f"add-rpc: no {anchor.strip()!r} in {path}: update ci/add-rpc.sh")
method = '''    async fn lookup_request(
        &self,
        request: Request<MyRequest>,
    ) -> Result<Response<MyResponse>, Status> {
        let id = request.into_inner().id;
        tracing::info!("Looked up request: {}", telemetry::bounded(&id));
        Ok(Response::new(MyResponse { result: id }))
    }

'''
open(path, "w").write(text.replace(anchor, anchor + method, 1))
PY
echo "added LookupRequest: $proto, $handler"

export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
step "add-rpc: every target builds (-D warnings, --locked)"
timed cargo build --locked --all-targets
step "add-rpc: clippy, fmt"
timed cargo clippy --locked --all-targets -- -D warnings
cargo fmt --check
step "add-rpc: the service's own tests"
timed cargo test --locked -p "$service-server" -p "$service-client"
step "add-rpc: the new method is served, traced and measured"
ensure_rotel
ensure_h2load
timed "$ROTEL_VENV/bin/python" "$REPO/ci/e2e/scenario_new_rpc.py" \
    --server-bin "$CARGO_TARGET_DIR/debug/$service-server" --client-bin "$CARGO_TARGET_DIR/debug/$service-client" \
    --grpc-service ledger.v1.Ledger --no-snapshot --method LookupRequest --workdir "$WORK/add-rpc/scenario"
