#!/usr/bin/env bash
# The example flow on a fresh machine: installs cargo-generate if missing, renders a service into a
# temporary directory, starts the server, calls it with the client, and stops it. No collector is
# needed: the JSON log lines and the trace id show the flow (the server reports, once, that it
# cannot reach one).
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
dest=$(mktemp -d)
step "rendering into $dest/demo"
(cd "$dest" && "$CARGO_GENERATE" generate --path "$REPO" --name demo --silent --vcs none)
cd "$dest/demo"
step "building (the first build takes a few minutes)"
cargo build --locked --quiet --bins
bin=$CARGO_TARGET_DIR/debug
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

step "starting the server on 127.0.0.1:$port (its JSON lines: $dest/server.log)"
LISTEN_ADDR=127.0.0.1:$port "$bin/my-service-server" >"$dest/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
    kill -0 $server 2>/dev/null || { cat "$dest/server.log"; die "the server exited"; }
    sleep 0.1
done

step "calling ProcessRequest"
"$bin/my-service-client" --server "http://127.0.0.1:$port" --id demo-42 2>"$dest/client.log"

step "stopping the server (SIGTERM: drain, flush, exit)"
kill -TERM $server && wait $server || true
trap - EXIT
step "the server's log lines for that call"
grep -F '"trace_id"' "$dest/server.log" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r["time"], "trace_id=" + r["trace_id"], "span_id=" + r["span_id"], r["msg"], sep="  ")'
printf '\nrendered workspace: %s/demo\n' "$dest"
