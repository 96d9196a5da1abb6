#!/usr/bin/env bash
# Installs what the project needs from Debian's packages (through sudo when not
# root). Fast and offline when everything is already there.
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v java >/dev/null || need+=(default-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(build-essential)
command -v c++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v perl >/dev/null || need+=(perl)
# librdkafka speaks TLS (and SCRAM) through OpenSSL: rdkafka-sys links Debian's.
command -v pkg-config >/dev/null || need+=(pkg-config)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
# aws-lc-sys (jsonwebtoken's crypto backend) builds AWS-LC with CMake.
command -v cmake >/dev/null || need+=(cmake)
command -v curl >/dev/null || need+=(curl)
# The secure stack's certificates and passwords (stack-secure.sh).
command -v openssl >/dev/null || need+=(openssl)
# The clock-skew scenarios run coupon-api (libfaketime) or redis-server
# (datefudge) with its clock shifted.
command -v faketime >/dev/null || need+=(faketime)
command -v datefudge >/dev/null || need+=(datefudge)
# The partition scenarios cut one TCP link on loopback with nftables.
command -v nft >/dev/null || need+=(nftables)

if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt_install "${need[@]}"
fi

command -v cargo >/dev/null ||
    die "no Rust toolchain found; install one with rustup (https://rustup.rs), then rerun"
