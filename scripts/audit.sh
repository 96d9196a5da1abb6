#!/usr/bin/env bash
# Audits Cargo.lock against the RustSec advisory database with cargo-audit,
# offline: the database is a checkout of https://github.com/rustsec/advisory-db
# that the caller passes as ADVISORY_DB, never fetched here; cargo-audit is
# installed once under $TOOLS (an ignored folder; that one install needs
# crates.io), later runs reuse it.
#
#   ADVISORY_DB=/path/to/advisory-db scripts/audit.sh      (or make audit)
#
# Fails (exit 1) on vulnerabilities. Warnings (unmaintained, unsound, yanked)
# are reported but do not fail unless AUDIT_DENY names them: "warnings" (all),
# or some of "unmaintained unsound yanked". AUDIT_IGNORE lists advisory ids to
# skip (e.g. one with no fix yet, once judged). Exit 2: no usable database.
#
# The yanked check reads cargo's local crates.io index cache (no network): it
# is as fresh as the last cargo command that resolved the dependencies.
# cargo-audit also reads its own settings (ignores, deny) from .cargo/audit.toml
# or ~/.cargo/audit.toml when one exists.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"
TOOLS="${TOOLS_DIR:-$ROOT/.stack/tools}"
CARGO="${CARGO:-cargo}"
LOCKFILE="$ROOT/Cargo.lock"

# Pinned, so every machine audits with the same rules (0.22.2 needs Rust 1.88).
CARGO_AUDIT_VERSION=0.22.2
CARGO_AUDIT="$TOOLS/bin/cargo-audit"

# cargo-audit warns that a fetched database is stale after 90 days; here the
# database is never fetched, so its age is reported instead.
STALE_AFTER_DAYS=90

no_database() { # why
    log "$1"
    cat >&2 <<'EOF'

make audit needs ADVISORY_DB: the path to a checkout of the RustSec advisory
database (https://github.com/rustsec/advisory-db). It is never fetched here, so
the audit runs without network. On a machine with network:

    git clone https://github.com/rustsec/advisory-db /path/to/advisory-db
    # later, to bring it up to date:  git -C /path/to/advisory-db pull

(or clone from a local mirror of that repository), then:

    ADVISORY_DB=/path/to/advisory-db make audit
EOF
    exit 2
}

[ -n "${ADVISORY_DB:-}" ] || no_database "ADVISORY_DB is not set"
[ -d "$ADVISORY_DB" ] || no_database "ADVISORY_DB=$ADVISORY_DB is not a directory"
[ -d "$ADVISORY_DB/crates" ] ||
    no_database "ADVISORY_DB=$ADVISORY_DB does not look like an advisory-db checkout (no crates/ folder)"
ADVISORY_DB="$(cd "$ADVISORY_DB" && pwd)"
[ -f "$LOCKFILE" ] || die "no $LOCKFILE to audit"

# cargo-audit, installed once (again when the pinned version changes).
if ! "$CARGO_AUDIT" --version 2>/dev/null | grep -qx "cargo-audit $CARGO_AUDIT_VERSION"; then
    log "installing cargo-audit $CARGO_AUDIT_VERSION under $TOOLS (once; needs crates.io, takes minutes)"
    "$CARGO" install --locked --quiet --force --root "$TOOLS" "cargo-audit@$CARGO_AUDIT_VERSION" ||
        die "could not install cargo-audit $CARGO_AUDIT_VERSION"
fi

# Date the results: the database's last commit.
if [ "$(git -C "$ADVISORY_DB" rev-parse --show-toplevel 2>/dev/null)" = "$ADVISORY_DB" ]; then
    db_commit="$(git -C "$ADVISORY_DB" log -1 --format=%H)"
    db_date="$(git -C "$ADVISORY_DB" log -1 --format=%cI)"
    db_age_days=$((($(date +%s) - $(git -C "$ADVISORY_DB" log -1 --format=%ct)) / 86400))
    log "advisory database: $ADVISORY_DB, commit $db_commit of $db_date ($db_age_days days old)"
    if [ "$db_age_days" -gt "$STALE_AFTER_DAYS" ]; then
        log "warning: the database is older than $STALE_AFTER_DAYS days: advisories published since" \
            "$db_date are not checked (git -C $ADVISORY_DB pull, on a machine with network)"
    fi
else
    log "advisory database: $ADVISORY_DB (not a git checkout: its date is unknown)"
fi
log "$("$CARGO_AUDIT" --version), auditing $LOCKFILE"

args=(audit --no-fetch --db "$ADVISORY_DB" --file "$LOCKFILE")
AUDIT_DENY="${AUDIT_DENY:-}" AUDIT_IGNORE="${AUDIT_IGNORE:-}"
for kind in ${AUDIT_DENY//,/ }; do args+=(--deny "$kind"); done
for id in ${AUDIT_IGNORE//,/ }; do args+=(--ignore "$id"); done

# The report as cargo-audit prints it; its status is this script's.
status=0
"$CARGO_AUDIT" "${args[@]}" || status=$?

# Then one line per finding, vulnerabilities apart from warnings, and where
# each flagged crate comes from: its dependents in Cargo.lock up to the
# workspace's crates (cargo-audit's own tree is off unless a config file turns
# it on; cargo tree --target all would need every platform's crates downloaded).
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
if ! "$CARGO_AUDIT" "${args[@]}" --json >"$report" 2>/dev/null && [ ! -s "$report" ]; then
    die "cargo-audit failed (exit $status), see its output above"
fi
python3 - "$report" "$LOCKFILE" "$AUDIT_DENY" <<'EOF' || die "could not read cargo-audit's JSON report"
import json, sys, tomllib

report = json.load(open(sys.argv[1]))
lock = tomllib.load(open(sys.argv[2], "rb"))
deny = set(sys.argv[3].replace(",", " ").split())
if "warnings" in deny:
    deny = {"unmaintained", "unsound", "yanked"}

def say(text=""):
    print(text, file=sys.stderr)

def line(kind, finding, verdict):
    package, advisory = finding["package"], finding.get("advisory") or {}
    fix = ", ".join((finding.get("versions") or {}).get("patched") or []) or "-"
    return "  %-13s %-24s %-18s %s (fixed in: %s)%s" % (
        kind, package["name"] + " " + package["version"], advisory.get("id", "-"),
        advisory.get("title", "version yanked from crates.io"), fix, verdict)

vulnerabilities = report["vulnerabilities"]["list"]
warnings = [(kind, w) for kind, ws in sorted(report["warnings"].items()) for w in ws]
say("audit: vulnerabilities (they fail the audit): %d" % len(vulnerabilities))
for v in vulnerabilities:
    say(line("vulnerability", v, ""))
say("audit: warnings (%s): %d" % ("those marked DENIED fail the audit" if deny
    else "reported only; AUDIT_DENY=warnings makes them fail", len(warnings)))
for kind, w in warnings:
    say(line(kind, w, "  DENIED" if kind in deny else ""))

# Cargo.lock names a dependency "name", "name version" or "name version (source)".
packages = lock.get("package", [])
versions = {}
for p in packages:
    versions.setdefault(p["name"], []).append(p["version"])
dependents = {}
for p in packages:
    for dep in p.get("dependencies", []):
        name, _, rest = dep.partition(" ")
        version = rest.split(" ")[0] if rest else versions.get(name, ["?"])[0]
        dependents.setdefault((name, version), set()).add((p["name"], p["version"]))
members = {(p["name"], p["version"]) for p in packages if "source" not in p}

def tree(node, prefix, seen):
    below = sorted(dependents.get(node, ()))
    for i, parent in enumerate(below):
        last = i == len(below) - 1
        label = "%s v%s%s" % (parent[0], parent[1], " (workspace)" if parent in members else "")
        again = parent in seen and parent in dependents
        say(prefix + ("└── " if last else "├── ") + label + (" (*)" if again else ""))
        if not again:
            seen.add(parent)
            tree(parent, prefix + ("    " if last else "│   "), seen)

flagged = dict.fromkeys((f["package"]["name"], f["package"]["version"])
                        for f in vulnerabilities + [w for _, w in warnings])
for name, version in flagged:
    say("audit: where %s %s comes from (its dependents in Cargo.lock, every target and feature;"
        " cargo tree -i %s@%s --target all for one build's view):" % (name, version, name, version))
    say("%s v%s" % (name, version))
    tree((name, version), "", set())
EOF

if [ "$status" = 0 ]; then
    log "ok: no vulnerabilities${AUDIT_DENY:+ and no denied warnings ($AUDIT_DENY)} in Cargo.lock" \
        "(advisory database of ${db_date:-unknown date})"
else
    log "failed: see the findings above (advisory database of ${db_date:-unknown date})"
fi
exit "$status"
