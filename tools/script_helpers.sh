# Sourced by tools/install.sh and tools/build_wheel.sh (POSIX sh), after they set PROG: one-line
# errors with their exit statuses (1 failed, 2 usage error) and the scratch folder removed at
# exit, whatever ends the script. Not a script of its own.
# shellcheck shell=sh

SCRATCH= # a temporary folder the script made (mktemp -d), removed at exit

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s (see the top of %s for the options)\n' "$PROG" "$*" "$0" >&2; exit 2; }
need_value() { if [ $# -lt 2 ] || [ -z "$2" ]; then usage_error "$1 needs a value"; fi; }
cleanup() { if [ -n "$SCRATCH" ]; then rm -rf -- "$SCRATCH"; fi; }
trap cleanup EXIT
