#!/usr/bin/env bash
# Adding a service refuses, with a message and without writing anything, where it cannot work:
# outside a rendered workspace, with a name that exists, without --allow-commands.
source "$(dirname "$0")/lib.sh"
out=$WORK/add-service
rm -rf "$out" && mkdir -p "$out/not-a-workspace"
render "$out" ws
failures=0

# expect_refused DIR TEXT ARGS...: adding a service in DIR fails, says TEXT and changes no file.
expect_refused() {
    local dir=$1 text=$2 before after
    shift 2
    before=$(cd "$dir" && find . -type f | sort | xargs -r md5sum)
    if (cd "$dir" && "$CARGO_GENERATE" generate --path "$REPO" --init --silent --vcs none "$@" >"$out/log" 2>&1); then
        echo "FAIL: accepted in $dir: $*"; failures=$((failures + 1))
    elif ! grep -qF -- "$text" "$out/log"; then
        echo "FAIL: $*: the message lacks \"$text\":"; sed 's/^/    /' "$out/log" | tail -4; failures=$((failures + 1))
    else
        after=$(cd "$dir" && find . -type f | sort | xargs -r md5sum)
        if [[ $before != "$after" ]]; then
            echo "FAIL: $*: files changed in $dir"; failures=$((failures + 1))
        else
            echo "ok: refused ($text)"
        fi
    fi
}

expect_refused "$out/not-a-workspace" "is not a workspace rendered by this template" --allow-commands --name orders
expect_refused "$out/ws" "already exists" --allow-commands --name my-service
expect_refused "$out/ws" "needs --allow-commands" --name orders
[[ $failures == 0 ]] || die "$failures add-service checks failed"
echo "add-service: all refusals checked"
