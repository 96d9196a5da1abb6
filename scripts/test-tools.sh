#!/usr/bin/env bash
# Installs the tools the tests call besides cargo, once, under $TOOLS (an
# ignored folder); later runs reuse them.
#
#   schemathesis   property-based test of the served OpenAPI document (PyPI);
#                  coupon-api's contract test runs it against a live instance
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.stack/tools}"
VENV="$TOOLS/schemathesis"

# Pinned, so every machine generates from the same strategies and checks.
PY_TOOLS=(schemathesis==4.32.5)

log() { printf '%s\n' "test-tools: $*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

stamp="$VENV/.installed"
want="$(printf '%s\n' "${PY_TOOLS[@]}")"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    as_root apt-get install -y -qq python3-venv >/dev/null
fi
log "installing ${PY_TOOLS[*]} into $VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "${PY_TOOLS[@]}"
printf '%s\n' "$want" >"$stamp"
