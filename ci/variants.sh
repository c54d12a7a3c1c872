#!/usr/bin/env bash
# Renders every variant in ci/variants/ outside the repository, fails if a render differs from its
# committed copy in examples/ (UPDATE_EXAMPLES=1 rewrites the copies instead), checks its deployment
# files (ci/deploy-check.sh), then builds, lints and tests each render (not with RENDER_ONLY=1). Usage: ci/variants.sh [VARIANT...]  (default: all)
source "$(dirname "$0")/lib.sh"
# The committed renders must not depend on who runs CI.
export CARGO_NAME="Template CI" CARGO_EMAIL="ci@example.invalid"
# Nor on which commit renders them: the answers files record the template's source and commit only
# where hooks/validate.rhai is not handed them, so hand it empty ones (a commit cannot hold its own id).
export CARGO_GENERATE_VALUE_TEMPLATE_SOURCE="" CARGO_GENERATE_VALUE_TEMPLATE_REVISION=""
variants=("$@")
if [[ ${#variants[@]} == 0 ]]; then
    for f in "$REPO"/ci/variants/*.toml; do variants+=("$(basename "$f" .toml)"); done
fi

render_variant() {
    local variant=$1 file="$REPO/ci/variants/$1.toml" dest=$WORK/variants/$1 name
    name=$(python3 "$REPO/ci/variant.py" "$file" name)
    mapfile -t defines < <(python3 "$REPO/ci/variant.py" "$file" defines)
    render "$dest" "$name" "${defines[@]}"
    while IFS= read -r add; do
        [[ -n $add ]] || continue
        mapfile -t defines < <(python3 "$REPO/ci/variant.py" "$file" add-defines "$add")
        (cd "$dest/$name" && "$CARGO_GENERATE" generate --path "$REPO" --init --allow-commands \
            --name "$add" --silent --vcs none "${defines[@]}" >/dev/null)
    done < <(python3 "$REPO/ci/variant.py" "$file" adds)
    RENDERED=$dest/$name
}

for variant in "${variants[@]}"; do
    step "variant $variant"
    render_variant "$variant"
    if [[ ${UPDATE_EXAMPLES:-0} == 1 ]]; then
        rm -rf "${REPO:?}/examples/$variant"
        mkdir -p "$REPO/examples"
        cp -r "$RENDERED" "$REPO/examples/$variant"
        echo "examples/$variant rewritten"
    elif ! diff -r "$REPO/examples/$variant" "$RENDERED" --exclude=target; then
        die "the render of $variant differs from examples/$variant: review the diff above, then run UPDATE_EXAMPLES=1 ci/variants.sh $variant and commit it"
    else
        echo "render equals examples/$variant"
    fi
    # Dockerfile, manifests, compose and workflow: no build needed, so renders-only runs do it too.
    timed bash "$REPO/ci/deploy-check.sh" "$RENDERED"
    if [[ ${RENDER_ONLY:-0} != 1 ]]; then
        timed bash "$REPO/ci/check-render.sh" "$RENDERED"
    fi
done
