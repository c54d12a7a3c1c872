#!/usr/bin/env bash
# The fork workflow works as documented: the favorites in ci/favorites.example.toml (pointed at
# this checkout) render a workspace with the house values, then add a service to it.
source "$(dirname "$0")/lib.sh"
out=$WORK/favorites
rm -rf "$out" && mkdir -p "$out"
sed "s|^git = .*|path = \"$REPO\"|" "$REPO/ci/favorites.example.toml" >"$out/cargo-generate.toml"
(cd "$out" && "$CARGO_GENERATE" generate --config "$out/cargo-generate.toml" acme --name shop --silent --vcs none >/dev/null)
(cd "$out/shop" && "$CARGO_GENERATE" generate --config "$out/cargo-generate.toml" acme-service \
    --allow-commands --name orders --silent --vcs none >/dev/null)
grep -q 'endpoint: "http://otel.acme.example:4317"' "$out/shop/crates/telemetry/src/defaults.rs" \
    || die "the favorite's otlp_endpoint did not reach the render"
grep -q 'team=payments' "$out/shop/crates/telemetry/src/defaults.rs" \
    || die "the favorite's resource_attributes did not reach the render"
[[ -f $out/shop/crates/orders-server/Cargo.toml ]] || die "the acme-service favorite added no service"
[[ -f $out/shop/deploy/orders/kustomization.yaml ]] && grep -q '^  orders:' "$out/shop/compose.yaml" \
    && grep -q '^  - ../../orders$' "$out/shop/deploy/overlays/example/kustomization.yaml" \
    || die "the acme-service favorite did not add the service's kustomize base, compose entry and overlay line"
echo "favorites: house workspace rendered and a service added"
