#!/usr/bin/env bash
# The deployment files of one rendered workspace, without a container engine or a cluster (neither
# runs on CI's machines, and no image can be pulled, so the image itself is not built here):
#   hadolint on the Dockerfile; `kubectl kustomize` of every base and overlay under deploy/, each
#   object validated offline against the Kubernetes schemas kubernetes-validate bundles, strictly
#   (unknown fields fail), for the oldest and the newest version we claim; `docker-compose config`;
#   actionlint on the workflow; and ci/deploy_check.py: ports, probes and shutdown timing agree with
#   the services' own configuration.
# Usage: ci/deploy-check.sh DIR
source "$(dirname "$0")/lib.sh"
dir=${1:?usage: ci/deploy-check.sh DIR}
# The manifests use native gRPC probes (GA 1.27); 1.30 is the oldest version the README claims.
K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.37.0}
name=$(basename "$dir")
out=$WORK/deploy-check/$name
rm -rf "$out" && mkdir -p "$out"
ensure_hadolint
ensure_kubernetes_validate
ensure_actionlint
ensure_kubectl
ensure_compose
cd "$dir"

step "$name: hadolint Dockerfile"
"$HADOLINT" Dockerfile
echo "clean"

step "$name: kubectl kustomize, kubernetes-validate --strict ($K8S_VERSIONS)"
kustomizations=(deploy/*/kustomization.yaml deploy/overlays/*/kustomization.yaml)
for k in "${kustomizations[@]}"; do
    d=$(dirname "$k")
    file=$out/$(tr / _ <<<"$d").yaml
    "$KUBECTL" kustomize "$d" >"$file"
    for version in $K8S_VERSIONS; do
        "$KUBERNETES_VALIDATE" --strict --quiet -k "$version" "$file" \
            || die "$d: an object does not validate against Kubernetes $version (above)"
    done
    printf '%s: %s objects valid\n' "$d" "$(grep -c '^kind:' "$file")"
done

step "$name: docker-compose config"
"${COMPOSE[@]}" -f compose.yaml config -q
echo "clean"

step "$name: actionlint .github/workflows/ci.yml"
"$ACTIONLINT" .github/workflows/ci.yml
echo "clean"

step "$name: manifests and compose agree with the services' configuration"
"$DEPLOY_VENV/bin/python" "$REPO/ci/deploy_check.py" . "$out/deploy_overlays_example.yaml"

step "$name: the agreement check fails on a grace period and a port that disagree"
sed -e 's/terminationGracePeriodSeconds: [0-9]*/terminationGracePeriodSeconds: 1/' \
    -e 's/containerPort: [0-9]*/containerPort: 1/' \
    "$out/deploy_overlays_example.yaml" >"$out/broken.yaml"
if "$DEPLOY_VENV/bin/python" "$REPO/ci/deploy_check.py" . "$out/broken.yaml" >"$out/broken.log"; then
    die "deploy_check.py accepted a grace period of 1 s and containerPort 1"
fi
grep -q "terminationGracePeriodSeconds 1 is not above" "$out/broken.log" && grep -q "containerPort grpc is 1," "$out/broken.log" \
    || { cat "$out/broken.log"; die "deploy_check.py failed, but not for the grace period and the port"; }
echo "refused, as it should be"
