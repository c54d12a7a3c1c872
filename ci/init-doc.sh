#!/usr/bin/env bash
# The documented command that adds a service works as written, without a terminal: it is read from
# the root README ("Add a service to a workspace") and the rendered README ("Add a service"), so the
# documents and this test cannot drift, and each is run with stdin from /dev/null in a fresh render.
# The service must be added under the name --name gives and on the workspace's next free port.
source "$(dirname "$0")/lib.sh"
out=$WORK/init-doc
rm -rf "$out" && mkdir -p "$out"
export CARGO_NAME="Template CI" CARGO_EMAIL="ci@example.invalid"

# documented_command FILE HEADING: the `cargo generate ... --init ...` line of the first sh block
# under "## HEADING", without its trailing comment.
documented_command() {
    awk -v heading="## $2" '
        $0 == heading { in_section = 1; next }
        in_section && /^## / { exit }
        in_section && /^```sh/ { in_block = 1; next }
        in_block && /^```/ { exit }
        in_block && /^cargo generate .*--init/ { sub(/[[:space:]]+#.*$/, ""); print; exit }
    ' "$1"
}

# check_documented FILE HEADING PLACEHOLDER: runs that command, PLACEHOLDER replaced by this checkout.
check_documented() {
    local file=$1 heading=$2 placeholder=$3 command ws
    command=$(documented_command "$file" "$heading")
    [[ -n $command ]] || die "no \`cargo generate ... --init\` line in the sh block under \"## $heading\" of $file"
    [[ $command == *"$placeholder"* ]] || die "the documented command names no $placeholder: $command"
    echo "documented ($(basename "$(dirname "$file")")/$(basename "$file")): $command"
    # Words as the reader types them; cargo-generate is the one CI proves, the checkout this one.
    local -a words
    read -r -a words <<<"${command/"$placeholder"/$REPO}"
    [[ ${words[0]} == cargo && ${words[1]} == generate ]] || die "not a cargo generate command: $command"
    ws=$out/$(basename "$file" .md)
    render "$ws" acme
    if ! (cd "$ws/acme" && "$CARGO_GENERATE" "${words[@]:1}" </dev/null >"$ws/log" 2>&1); then
        sed 's/^/    /' "$ws/log" | tail -20
        die "the documented command failed without a terminal: $command"
    fi
    # --name payments: service Payments, package payments.v1, port 50052 (50051 is the first service's).
    local lib=$ws/acme/crates/payments-proto/src/lib.rs
    [[ -f $lib && -f $ws/acme/crates/payments-server/Cargo.toml && -f $ws/acme/crates/payments-client/Cargo.toml ]] \
        || die "the documented command added no crates/payments-{proto,server,client}"
    grep -q 'DEFAULT_PORT: u16 = 50052;' "$lib" \
        || die "payments did not get the next free port 50052: $(grep -o 'DEFAULT_PORT: u16 = [0-9]*' "$lib")"
    grep -q '^service Payments ' -r "$ws/acme/crates/payments-proto/proto" \
        || die "the added service is not named Payments"
    grep -q '^package payments.v1;' -r "$ws/acme/crates/payments-proto/proto" \
        || die "the added service's package is not payments.v1"
    grep -q '^  payments:' "$ws/acme/compose.yaml" || die "compose.yaml has no payments entry"
    echo "ok: Payments added on port 50052, with no terminal"
}

check_documented "$REPO/README.md" "Add a service to a workspace" "<a checkout>"
check_documented "$REPO/template/README.md" "Add a service" "<template>"
echo "init-doc: the documented --init commands work as written"
