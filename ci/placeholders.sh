#!/usr/bin/env bash
# Every placeholder rejects a bad value with a message that says what is wrong and what is allowed,
# and the render writes no file. Valid non-default values render.
source "$(dirname "$0")/lib.sh"
out=$WORK/placeholders
rm -rf "$out" && mkdir -p "$out"
failures=0

# expect_rejected VAR VALUE TEXT: rendering with VAR=VALUE fails, says TEXT, and writes no file.
expect_rejected() {
    local var=$1 value=$2 text=$3 log=$out/log
    if (cd "$out" && "$CARGO_GENERATE" generate --path "$REPO" --name bad --silent --vcs none \
            --define "$var=$value" >"$log" 2>&1); then
        echo "FAIL: $var=$value was accepted"; failures=$((failures + 1))
    elif ! grep -qF "invalid $var" "$log" || ! grep -qF -- "$text" "$log"; then
        echo "FAIL: $var=$value: the message lacks \"invalid $var\" or \"$text\":"; sed 's/^/    /' "$log" | head -5
        failures=$((failures + 1))
    elif [[ -n $(find "$out/bad" -type f 2>/dev/null) ]]; then
        echo "FAIL: $var=$value: files were written"; failures=$((failures + 1))
    else
        echo "ok: $var=$(printf %q "$value") rejected: $(grep -o "invalid $var.*" "$log" | head -1 | cut -c1-110)"
    fi
    rm -rf "$out/bad"
}

expect_rejected service_name "My Service" "PascalCase"
expect_rejected service_name "2Fast" "starts with A-Z"
expect_rejected service_name "my_service" "PascalCase"
expect_rejected service_name "Overlays" "deploy/overlays/"
expect_rejected proto_package "MyService.v1" "start with a-z"
expect_rejected proto_package "myservice" "ending in a version"
expect_rejected proto_package "myservice.latest" "version such as v1"
expect_rejected port "70000" "from 1 to 65535"
expect_rejected port "0" "from 1 to 65535"
expect_rejected port "http" "from 1 to 65535"
expect_rejected otlp_endpoint "localhost:4317" "http:// or https://"
expect_rejected otlp_endpoint "http://" "no host"
expect_rejected otlp_endpoint "http://collector:99999" "1 to 65535"
expect_rejected license "MIT; rm -rf /" "SPDX"
expect_rejected resource_attributes "team" "key=value pairs"
expect_rejected resource_attributes 'team=a b' "spaces"

# A rejected value must not block the retry. cargo-generate makes the destination directory before
# the hook can refuse, and then refuses to render into it; the message names the directory and the
# command that clears it. Follow it, as a user would, and the same command with a good value renders.
rm -rf "$out/Retry-Me" "$out/retry-me"
(cd "$out" && "$CARGO_GENERATE" generate --path "$REPO" --name Retry-Me --silent --vcs none --define port=0 >"$out/log" 2>&1) || true
clear=$(grep -o 'remove it ([^)]*)' "$out/log" | head -1 | sed 's/remove it (//; s/)$//')
if [[ $clear != "rmdir retry-me" ]]; then
    echo "FAIL: the rejection does not say how to clear the way for the retry (want \"rmdir retry-me\", got \"$clear\")"
    failures=$((failures + 1))
elif ! (cd "$out" && $clear && "$CARGO_GENERATE" generate --path "$REPO" --name Retry-Me --silent --vcs none \
        --define port=8080 >"$out/log" 2>&1) || [[ ! -f $out/retry-me/Cargo.toml ]]; then
    echo "FAIL: the retry after \"$clear\" did not render:"; sed 's/^/    /' "$out/log" | tail -5
    failures=$((failures + 1))
else
    echo "ok: after a rejected value, \"$clear\" (as the message says) and the retry renders"
fi
rm -rf "$out/retry-me"

# The protocol is a choice list: cargo-generate itself rejects other values.
if (cd "$out" && "$CARGO_GENERATE" generate --path "$REPO" --name bad --silent --vcs none \
        --define otlp_protocol=http/json >"$out/log" 2>&1); then
    echo "FAIL: otlp_protocol=http/json was accepted"; failures=$((failures + 1))
else
    echo "ok: otlp_protocol=http/json rejected"
fi
rm -rf "$out/bad"

# Derived defaults: the package follows the service name, the HTTP protocol its own port.
render "$out" good --define service_name=Payments --define otlp_protocol=http/protobuf
grep -q '^package payments.v1;' "$out/good/crates/payments-proto/proto/payments/v1/payments.proto" \
    || { echo "FAIL: proto_package was not derived as payments.v1"; failures=$((failures + 1)); }
grep -q 'endpoint: "http://localhost:4318"' "$out/good/crates/telemetry/src/defaults.rs" \
    || { echo "FAIL: http/protobuf did not default to port 4318"; failures=$((failures + 1)); }
grep -rq '{{\|{%' "$out/good" --include='*.rs' --include='*.toml' --include='*.md' --include='*.proto' \
    && { echo "FAIL: unrendered placeholders remain"; failures=$((failures + 1)); }

[[ $failures == 0 ]] || die "$failures placeholder checks failed"
echo "placeholders: all checks passed"
