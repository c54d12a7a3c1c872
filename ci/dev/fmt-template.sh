#!/usr/bin/env bash
# Formats the template's Rust with rustfmt: renders the defaults, runs `cargo fmt` on the render and
# copies each formatted file back over its template source. A file holding placeholders cannot be
# copied back; the script names each one rustfmt would change, to fix by hand, and fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Both renders get the same project name (it is a placeholder in the sources), in two directories.
for copy in formatted rendered; do
    mkdir -p "$work/$copy"
    (cd "$work/$copy" && cargo generate --path "$repo" --name ws --silent --vcs none >/dev/null)
done
(cd "$work/formatted/ws" && cargo fmt)
status=0
while IFS= read -r -d '' file; do
    rel=${file#"$work/formatted/ws/"}
    src="$repo/template/${rel//my-service-/\{\{service_kebab\}\}-}"
    [[ -f $src ]] || continue
    if cmp -s "$file" "$work/rendered/ws/$rel"; then
        continue
    elif grep -q '{{\|{%' "$src"; then
        echo "rustfmt would change ${src#"$repo/"}, which has placeholders: fix it by hand"
        diff "$work/rendered/ws/$rel" "$file" || true
        status=1
    else
        cp "$file" "$src"
        echo "formatted ${src#"$repo/"}"
    fi
done < <(find "$work/formatted/ws/crates" -name '*.rs' -print0)
exit $status
