# shellcheck shell=bash
# Binaries of Debian's prometheus package, unpacked without installing it
# (installing would also set up and start a Prometheus server), once:
#   prometheus_binaries BIN_DIR NAME...   e.g. promtool prometheus
# Names already in BIN_DIR are kept; the package is downloaded only when one
# is missing, and removed afterwards. Expects scripts/lib/common.sh (as_root).
prometheus_binaries() {
    local bin="$1" deb_dir="$1/../deb" name missing=()
    shift
    for name in "$@"; do [ -x "$bin/$name" ] || missing+=("$name"); done
    [ "${#missing[@]}" -eq 0 ] && return
    mkdir -p "$bin" "$deb_dir"
    if ! apt-cache show prometheus >/dev/null 2>&1; then as_root apt-get update -qq; fi
    echo "unpacking ${missing[*]} from Debian's prometheus package into $bin" >&2
    (cd "$deb_dir" && apt-get download prometheus >/dev/null 2>&1) || {
        echo "could not download Debian's prometheus package" >&2
        return 1
    }
    for name in "${missing[@]}"; do
        dpkg-deb --fsys-tarfile "$deb_dir"/prometheus_*.deb | tar -xO "./usr/bin/$name" >"$bin/$name.tmp"
        chmod +x "$bin/$name.tmp" && mv "$bin/$name.tmp" "$bin/$name"
    done
    rm -f "$deb_dir"/prometheus_*.deb
}
