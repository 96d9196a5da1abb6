#!/usr/bin/env bash
# Builds the three images of docker/Dockerfile (coupon-api, coupon-writer,
# coupon-reconcile), tagged localhost/<name>:$IMAGE_TAG (dev), then prints
# their sizes. `make images`.
#
# With a reachable Docker engine, `docker build` uses the Dockerfile's public
# base images (rust:…, debian:…-slim). Otherwise podman (installed from Debian
# when missing) builds the same Dockerfile with two local substitutes for the
# public bases, passed as build arguments (no image registry is needed):
#
#   localhost/debian:<release>[-slim]   Debian from debootstrap (minbase,
#                                       documentation and apt lists removed)
#   localhost/rust:<version>-<release>  that Debian plus this machine's own Rust
#                                       toolchain (rustup's default) laid out as
#                                       in the official image: RUSTUP_HOME
#                                       /usr/local/rustup, CARGO_HOME /usr/local/cargo
#
# Both are made once and reused; a rerun of `make images` reuses podman's layer
# cache (the cargo-chef dependency layer included), so an unchanged tree builds
# nothing. Cargo inside the build fetches crates from crates.io.
#
#   IMAGE_TAG=dev         tag of the three images
#   IMAGE_ENGINE=podman   force podman even when a Docker engine answers
#   CONTAINERS_CONF       podman settings (default docker/containers.conf:
#                         runtime runc, ulimits root may set)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TAG="${IMAGE_TAG:-dev}"
TARGETS=(coupon-api coupon-writer coupon-reconcile)
WORK="$ROOT/.stack/images"
DOCKERFILE=docker/Dockerfile
RUST_VERSION="$(sed -n 's/^ARG RUST_VERSION=//p' "$DOCKERFILE")"
DEBIAN_RELEASE="$(sed -n 's/^ARG DEBIAN_RELEASE=//p' "$DOCKERFILE")"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
elapsed() { local s=$(($(date +%s) - $1)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

[ -n "$RUST_VERSION" ] && [ -n "$DEBIAN_RELEASE" ] || die "no RUST_VERSION/DEBIAN_RELEASE ARG in $DOCKERFILE"
START=$(date +%s)

# ---------------------------------------------------------------- engine
if [ "${IMAGE_ENGINE:-}" != podman ] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    ENGINE=docker
else
    ENGINE=podman
    need=()
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing ${need[*]} from Debian"
        apt_install "${need[@]}"
    fi
    export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/docker/containers.conf}"
fi
log "engine: $ENGINE"

# ---------------------------------------------------------------- podman: local bases
DEBIAN_LOCAL=localhost/debian
RUST_LOCAL=localhost/rust
RUST_TAG="$RUST_VERSION-$DEBIAN_RELEASE"

debian_base() {
    if podman image exists "$DEBIAN_LOCAL:$DEBIAN_RELEASE-slim"; then return; fi
    local t0 rootfs="$WORK/debian-rootfs"
    t0=$(date +%s)
    log "debootstrap $DEBIAN_RELEASE (minbase) into $rootfs"
    as_root rm -rf "$rootfs"
    mkdir -p "$rootfs"
    as_root debootstrap --variant=minbase "$DEBIAN_RELEASE" "$rootfs" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        die "debootstrap failed: $WORK/debootstrap.log"
    # As debian:*-slim: no documentation, manuals or locales from later
    # installs, no apt lists or cached packages in the image.
    as_root tee "$rootfs/etc/dpkg/dpkg.cfg.d/slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    # apt as in the official images: no package cache or translations left behind.
    as_root tee "$rootfs/etc/apt/apt.conf.d/docker-clean" >/dev/null <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' | as_root tee "$rootfs/etc/apt/apt.conf.d/docker-no-languages" >/dev/null
    echo 'Acquire::GzipIndexes "true";' | as_root tee "$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes" >/dev/null
    as_root find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    as_root rm -rf "$rootfs"/usr/share/{man,info,locale,groff,lintian,linda}/* \
        "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log "$rootfs"/tmp/*
    as_root tar -C "$rootfs" --numeric-owner -c . |
        podman import --quiet --change 'CMD ["bash"]' - "$DEBIAN_LOCAL:$DEBIAN_RELEASE" >/dev/null
    podman tag "$DEBIAN_LOCAL:$DEBIAN_RELEASE" "$DEBIAN_LOCAL:$DEBIAN_RELEASE-slim"
    as_root rm -rf "$rootfs"
    log "$DEBIAN_LOCAL:$DEBIAN_RELEASE(-slim) imported in $(elapsed "$t0")"
}

rust_base() {
    local toolchain version want have
    toolchain="$(rustup default 2>/dev/null | awk '{print $1}')"
    [ -n "$toolchain" ] || die "no default rustup toolchain on this machine"
    local src="${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$toolchain"
    src="$(readlink -f "$src")"
    version="$("$src/bin/rustc" --version | awk '{print $2}')"
    case "$version" in
        "$RUST_VERSION" | "$RUST_VERSION".*) ;;
        *) die "the Dockerfile wants Rust $RUST_VERSION, the default toolchain here is $version" ;;
    esac
    # This machine's CA bundle goes in too: cargo in the build reaches
    # crates.io through whatever TLS inspection the host trusts.
    local ca=/etc/ssl/certs/ca-certificates.crt
    [ -f "$ca" ] || die "no CA bundle at $ca"
    want="$version $(sha256sum "$ca" | cut -c1-16)"
    if podman image exists "$RUST_LOCAL:$RUST_TAG"; then
        have="$(podman image inspect --format '{{index .Labels "rust.version"}} {{index .Labels "host.ca"}}' "$RUST_LOCAL:$RUST_TAG")"
        [ "$have" = "$want" ] && return
    fi
    local t0 ctx="$WORK/rust-context" name="$version-x86_64-unknown-linux-gnu"
    t0=$(date +%s)
    case "$(uname -m)" in x86_64) ;; *) die "only x86_64 hosts are handled" ;; esac
    log "assembling $RUST_LOCAL:$RUST_TAG from $src (Rust $version)"
    rm -rf "$ctx"
    mkdir -p "$ctx/rustup/toolchains" "$ctx/cargo/bin"
    # Hard links where possible (same file system), copies otherwise; the
    # toolchain's HTML documentation (share/doc) stays out.
    cp -al "$src" "$ctx/rustup/toolchains/$name" 2>/dev/null || cp -a "$src" "$ctx/rustup/toolchains/$name"
    rm -rf "$ctx/rustup/toolchains/$name/share/doc"
    cp -a "$(command -v rustup)" "$ctx/cargo/bin/rustup"
    for proxy in cargo rustc rustdoc rust-gdb rust-lldb cargo-clippy clippy-driver cargo-fmt rustfmt; do
        ln -s rustup "$ctx/cargo/bin/$proxy"
    done
    mkdir -p "$ctx/ca"
    awk -v dir="$ctx/ca" '
        /BEGIN CERTIFICATE/ { f = dir "/host-" ++n ".crt" }
        f { print > f }
        /END CERTIFICATE/ { close(f); f = "" }' "$ca"
    cat >"$ctx/rustup/settings.toml" <<EOF
version = "12"
default_toolchain = "$name"
profile = "minimal"
auto_self_update = "disable"

[overrides]
EOF
    cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_LOCAL:$DEBIAN_RELEASE
# What the official rust image brings besides Rust: a C toolchain and CA
# certificates (cargo fetches crates over HTTPS).
COPY ca /usr/local/share/ca-certificates/host
RUN apt-get update \\
    && apt-get install -y --no-install-recommends ca-certificates gcc libc6-dev make \\
    && update-ca-certificates >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo RUST_VERSION=$version \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY rustup /usr/local/rustup
COPY cargo /usr/local/cargo
RUN rustc --version && cargo --version
LABEL rust.version=$version host.ca=${want#* }
EOF
    podman build --pull=never -f "$ctx/Containerfile" -t "$RUST_LOCAL:$RUST_TAG" "$ctx" >"$WORK/rust-image.log" 2>&1 ||
        die "building $RUST_LOCAL:$RUST_TAG failed: $WORK/rust-image.log"
    rm -rf "$ctx"
    log "$RUST_LOCAL:$RUST_TAG built in $(elapsed "$t0")"
}

# ---------------------------------------------------------------- the images
mkdir -p "$WORK"
build_args=()
if [ "$ENGINE" = podman ]; then
    debian_base
    rust_base
    # Docker's image format: the OCI format has no HEALTHCHECK, podman drops it.
    build_args=(--pull=never --layers --format docker
        --build-arg "RUST_IMAGE=$RUST_LOCAL" --build-arg "DEBIAN_IMAGE=$DEBIAN_LOCAL")
fi
# Podman reads a .dockerignore at the context root only: name the Dockerfile's own.
[ "$ENGINE" = podman ] && build_args+=(--ignorefile docker/Dockerfile.dockerignore)

for target in "${TARGETS[@]}"; do
    t0=$(date +%s)
    log "building $target (log: .stack/images/$target.log)"
    if ! "$ENGINE" build "${build_args[@]}" -f "$DOCKERFILE" --target "$target" \
        -t "localhost/$target:$TAG" . >"$WORK/$target.log" 2>&1; then
        tail -n 40 "$WORK/$target.log" >&2
        die "building $target failed: $WORK/$target.log"
    fi
    log "$target built in $(elapsed "$t0")"
done

log "done in $(elapsed "$START")"
printf '%-36s %s\n' IMAGE SIZE
for target in "${TARGETS[@]}"; do
    printf '%-36s %s\n' "localhost/$target:$TAG" \
        "$("$ENGINE" image ls --format '{{.Size}}' "localhost/$target:$TAG" | head -n1)"
done
