# shellcheck shell=bash
# Pinned Python tools in a virtual environment of their own, installed once:
#   python_tools VENV PACKAGE==VERSION...
# A later call with the same pins does nothing; changed pins reinstall.
# Expects scripts/lib/common.sh (as_root).
python_tools() {
    local venv="$1"
    shift
    local stamp="$venv/.installed" want
    want="$(printf '%s\n' "$@")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return; fi
    command -v python3 >/dev/null || { echo "python3 is missing: run 'make setup'" >&2; return 1; }
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        as_root apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "installing $* into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "$@"
    printf '%s\n' "$want" >"$stamp"
}
