# shellcheck shell=bash
# What the scripts under scripts/ share, one home each. Source it first:
#
#   log MESSAGE...            to stderr, prefixed with the script's name ("stack: …";
#                             LOG_TAG, set after sourcing, changes the prefix)
#   die MESSAGE...            log, then exit 1
#   as_root COMMAND...        runs COMMAND as root: directly when root, else through sudo
#   apt_install PACKAGE...    Debian packages through as_root (package lists updated first)
#   json_field FIELD [FILE]   prints one top-level field of a JSON object read from
#                             FILE or stdin (strings as they are, other values as JSON)
#   wait_for [--log FILE] [--every S] SECONDS WHAT COMMAND...
#                             runs COMMAND (output discarded) every S seconds (0.3)
#                             until it succeeds; after SECONDS dies with "WHAT did not
#                             come up within SECONDS s", the last attempt's output, and
#                             FILE as the log to read
#   dev_env                   the development credentials of scripts/lib/dev.env as
#                             shell variables (a caller exports what its programs need)
#   dev_database_url [DB]     after dev_env: the URL of database DB (POSTGRES_DB) of
#                             the local stack's PostgreSQL (127.0.0.1:PG_PORT)

SCRIPTS_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG_TAG="$(basename "$0" .sh)"

log() { printf '%s\n' "$LOG_TAG: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() { # package...
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

json_field() { # field [file]
    python3 -c '
import json, sys
try:
    data = json.load(open(sys.argv[2]) if len(sys.argv) > 2 else sys.stdin)
except ValueError as error:
    sys.exit("not JSON: %s" % error)
if not isinstance(data, dict) or sys.argv[1] not in data:
    sys.exit("no field %r in the JSON read" % sys.argv[1])
value = data[sys.argv[1]]
print(value if isinstance(value, str) else json.dumps(value))' "$@"
}

# The check may print why it failed; the last attempt's words go into the error.
wait_for() { # [--log logfile] [--every interval_s] timeout_s what command...
    local logfile="" every=0.3
    while :; do
        case "$1" in
            --log) logfile=$2; shift 2 ;;
            --every) every=$2; shift 2 ;;
            *) break ;;
        esac
    done
    local timeout=$1 what=$2; shift 2
    local deadline=$((SECONDS + timeout)) why
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            why="$("$@" 2>&1 | tail -3 | tr '\n' ' ' | sed 's/ *$//' || true)"
            die "$what did not come up within ${timeout}s${why:+ ($why)}${logfile:+; see its log: $logfile}"
        fi
        sleep "$every"
    done
}

dev_env() {
    # shellcheck source=dev.env
    . "$SCRIPTS_LIB/dev.env"
}

dev_database_url() { # [database]
    echo "postgres://$POSTGRES_USER:$POSTGRES_PASSWORD@127.0.0.1:${PG_PORT:-5432}/${1:-$POSTGRES_DB}"
}
