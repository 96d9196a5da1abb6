#!/usr/bin/env bash
# Installs the tools the tests call besides cargo, once, under $TOOLS (an
# ignored folder); later runs reuse them.
#
#   schemathesis   property-based test of the served OpenAPI document (PyPI);
#                  coupon-api's contract test runs it against a live instance
#   prometheus     server from Debian's package; coupon-e2e's observability
#                  test loads the alert rules into it and scrapes the services
#   chromium       headless Chromium and its WebDriver (Debian's chromium,
#                  chromium-driver); coupon-api's console test drives the
#                  promotion console and Swagger UI in it
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.stack/tools}"
VENV="$TOOLS/schemathesis"

# Pinned, so every machine generates from the same strategies and checks.
PY_TOOLS=(schemathesis==4.32.5)

# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/venv.sh
. "$ROOT/scripts/lib/venv.sh"

python_tools "$VENV" "${PY_TOOLS[@]}"

# Prometheus (server): an e2e test loads deploy/observability's rules into it.
# shellcheck source=lib/prometheus.sh
. "$ROOT/scripts/lib/prometheus.sh"
prometheus_binaries "$TOOLS/bin" prometheus

# Chromium and chromedriver (Debian's): the console test's browser.
browser=()
command -v chromium >/dev/null || browser+=(chromium)
command -v chromedriver >/dev/null || browser+=(chromium-driver)
if [ ${#browser[@]} -gt 0 ]; then
    log "installing ${browser[*]}"
    apt_install "${browser[@]}"
fi
