#!/usr/bin/env bash
# A rendered workspace follows its template (scripts/update-template): a render of the current
# template with one added service, committed, with the team's edits (a file of their own, a line
# appended to a rendered file), is brought to a newer template made on the spot (a commit in a
# scratch clone that changes the shared crate grpc-serving, every service's server crate, adds a
# file and removes one). The update must bring every change, keep every edit, record the revision,
# leave the result staged, and the workspace must build. Then: a line both the team and the template
# change ends in conflict markers and a non-zero exit; a dirty tree and a directory outside git are
# refused, changing nothing; --check says behind, then up to date.
# The workspace's services are Inventory and Shipping, names no other render uses: its service crates
# never stand in for another render's in the shared target directory (see ci/add-rpc.sh).
# Usage: ci/update-template.sh
source "$(dirname "$0")/lib.sh"
ensure_cargo_generate
out=$WORK/update-template
rm -rf "$out"
mkdir -p "$out"
export CARGO_NAME="Template CI" CARGO_EMAIL="ci@example.invalid"
export GIT_AUTHOR_NAME="Template CI" GIT_AUTHOR_EMAIL="ci@example.invalid"
export GIT_COMMITTER_NAME="Template CI" GIT_COMMITTER_EMAIL="ci@example.invalid"
# The renders here record where they came from (ci/variants.sh hands its renders empty values).
unset CARGO_GENERATE_VALUE_TEMPLATE_SOURCE CARGO_GENERATE_VALUE_TEMPLATE_REVISION
# The update script finds cargo-generate on PATH.
PATH=$(dirname "$(command -v "$CARGO_GENERATE")"):$PATH
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# ---- The template as it is on disk, committed in a scratch clone that can take newer commits.
tmpl=$out/template
git clone -q "$REPO" "$tmpl"
git -C "$tmpl" ls-files -z | (cd "$tmpl" && xargs -0 rm -f)
(cd "$REPO" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e $f ]] && printf '%s\0' "$f"; done) | tar -C "$REPO" --null -T - -cf - | tar -C "$tmpl" -xf -
git -C "$tmpl" add -A
git -C "$tmpl" commit -qm "the template as on disk" >/dev/null || true
tmpl=$(cd "$tmpl" && pwd -P)
rev1=$(git -C "$tmpl" rev-parse HEAD)

# ---- A workspace rendered at rev1, a service added, committed; the answers record source and commit.
(cd "$out" && "$CARGO_GENERATE" generate --path "$tmpl" --name acme --define service_name=Inventory \
    --silent --vcs none --allow-commands >"$out/render.log" 2>&1) || { cat "$out/render.log"; die "render failed"; }
ws=$out/acme
(cd "$ws" && "$CARGO_GENERATE" generate --path "$tmpl" --init --allow-commands --name shipping \
    --silent --vcs none >"$out/render.log" 2>&1) || { cat "$out/render.log"; die "adding shipping failed"; }
for f in acme shipping; do
    grep -qxF "source = \"$tmpl\"" "$ws/.template-answers/$f.toml" && grep -qxF "revision = \"$rev1\"" "$ws/.template-answers/$f.toml" \
        && ok "$f.toml records the template's source and commit" \
        || fail "$f.toml does not record source $tmpl and revision $rev1: $(grep -E '^(source|revision)' "$ws/.template-answers/$f.toml" | paste -sd' ')"
done
[[ -x $ws/scripts/update-template ]] && ok "scripts/update-template is rendered, executable" || die "no executable scripts/update-template in the render"
cd "$ws"
git init -q && git add -A && git commit -qm "render at ${rev1:0:12}"

# ---- The team's edits.
mkdir -p docs
printf '# Runbook\nThe team'"'"'s own file.\n' >docs/runbook.md
echo "// Team edit: the stock team owns this handler." >>crates/inventory-server/src/service.rs
git add -A && git commit -qm "team edits"

# ---- A newer template: the shared crate, every service's server crate, a file added, one removed.
server_tpl='template/crates/{{service_kebab}}-server'
printf '\n/// Set by the newer template of ci/update-template.sh.\npub const UPDATE_PROBE: &str = "shared";\n' \
    >>"$tmpl/template/crates/grpc-serving/src/lib.rs"
printf '\n// Newer template: every server names the shared crate'"'"'s probe.\nconst _: &str = grpc_serving::UPDATE_PROBE;\n' \
    >>"$tmpl/$server_tpl/src/main.rs"
printf 'Added by the newer template.\n' >"$tmpl/$server_tpl/UPDATED.md"
git -C "$tmpl" rm -q template/.dockerignore
git -C "$tmpl" add -A && git -C "$tmpl" commit -qm "newer template: grpc-serving and every server change"
rev2=$(git -C "$tmpl" rev-parse HEAD)

# ---- --check: behind by one commit.
status=0
scripts/update-template --check >"$out/check.log" 2>&1 || status=$?
[[ $status == 1 ]] && grep -q 'behind .* by 1 commit' "$out/check.log" \
    && ok "--check says behind by 1 commit (exit 1)" || { cat "$out/check.log"; fail "--check before the update: exit $status"; }

# ---- The update.
status=0
scripts/update-template >"$out/update.log" 2>&1 || status=$?
cat "$out/update.log"
[[ $status == 0 ]] || fail "the update exited $status"
grep -q 'pub const UPDATE_PROBE' crates/grpc-serving/src/lib.rs && ok "the shared crate's change arrived" || fail "grpc-serving did not change"
for svc in inventory shipping; do
    grep -q 'grpc_serving::UPDATE_PROBE' "crates/$svc-server/src/main.rs" && [[ -f crates/$svc-server/UPDATED.md ]] \
        && ok "$svc-server: changed file and added file arrived" || fail "$svc-server did not get the server crate's change"
done
[[ ! -e .dockerignore ]] && ok "the file the template removed is gone" || fail ".dockerignore, removed by the template, is still there"
[[ -f docs/runbook.md ]] && ok "the team's own file is kept" || fail "docs/runbook.md is gone"
[[ $(tail -1 crates/inventory-server/src/service.rs) == "// Team edit: the stock team owns this handler." ]] \
    && ok "the team's appended line is kept" || fail "the team's line in inventory-server/src/service.rs is gone"
for f in acme shipping; do
    grep -qxF "revision = \"$rev2\"" ".template-answers/$f.toml" && ok "$f.toml records the new revision" \
        || fail "$f.toml does not record $rev2"
done
if git diff --quiet && [[ -z $(git status --porcelain --untracked-files=normal | grep -v '^[MADR] ') ]] \
    && ! git diff --cached --quiet; then
    ok "the result is staged, nothing left unstaged"
else
    git status --short; fail "the result is not wholly staged"
fi
git commit -qm "update the template to ${rev2:0:12}"
status=0
scripts/update-template --check >"$out/check.log" 2>&1 || status=$?
[[ $status == 0 ]] && grep -q 'up to date' "$out/check.log" \
    && ok "--check says up to date (exit 0)" || { cat "$out/check.log"; fail "--check after the update: exit $status"; }

step "update-template: the updated workspace builds"
timed cargo build --workspace --quiet

# ---- A collision: the team rewords a line, the template then changes the same line.
sed -i 's|^/// Implements the service.s RPCs\.$|/// The RPCs of the service, as the stock team reads them.|' crates/inventory-server/src/service.rs
git commit -qam "team rewords the handler's doc line"
sed -i 's|^/// Implements the service.s RPCs\.$|/// Implements the RPCs of the service (newer template).|' "$tmpl/$server_tpl/src/service.rs"
git -C "$tmpl" commit -qam "newer template: the handler's doc line"
rev3=$(git -C "$tmpl" rev-parse HEAD)
status=0
scripts/update-template >"$out/update.log" 2>&1 || status=$?
cat "$out/update.log"
file=crates/inventory-server/src/service.rs
if [[ $status == 1 ]] && grep -q '^<<<<<<<' "$file" && grep -q '^>>>>>>>' "$file" \
    && grep -q 'as the stock team reads them' "$file" && grep -q '(newer template)' "$file" \
    && grep -qF "$file" "$out/update.log" && git ls-files -u -- "$file" | grep -q .; then
    ok "a collision ends in conflict markers (both sides kept), listed, unmerged in the index, exit 1"
else
    fail "the collision: exit $status, or no conflict markers with both sides in $file, or not listed"
fi
grep -q '(newer template)' crates/shipping-server/src/service.rs \
    && ok "the service the team did not touch takes the template's line" || fail "shipping-server/src/service.rs did not change"
git reset -q --hard HEAD

# ---- Refusals, changing nothing: a dirty tree; outside a git repository.
echo "// uncommitted" >>"$file"
before=$(git status --porcelain; md5sum "$file")
status=0
scripts/update-template >"$out/update.log" 2>&1 || status=$?
after=$(git status --porcelain; md5sum "$file")
[[ $status != 0 ]] && grep -q 'uncommitted changes' "$out/update.log" && [[ $before == "$after" ]] \
    && ok "a dirty tree is refused, nothing changed" || { cat "$out/update.log"; fail "a dirty tree: exit $status"; }
git checkout -q -- "$file"
mkdir -p "$out/not-git" && cp -r .template-answers scripts "$out/not-git/"
status=0
(cd "$out/not-git" && GIT_CEILING_DIRECTORIES=$out scripts/update-template >"$out/update.log" 2>&1) || status=$?
[[ $status != 0 ]] && grep -q 'not in a git repository' "$out/update.log" \
    && ok "outside a git repository it is refused" || { cat "$out/update.log"; fail "outside git: exit $status"; }

[[ $failures == 0 ]] || die "$failures update-template checks failed"
echo "update-template: all checks passed (${rev1:0:12} -> ${rev2:0:12} -> ${rev3:0:12})"
