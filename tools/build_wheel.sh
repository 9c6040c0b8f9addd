#!/bin/sh
# Build the edge-face wheel: the device package, with the int8 model (edge/models/) inside.
#
#   tools/build_wheel.sh [--python FILE] [--out DIR]   build; prints the wheel's path
#   tools/build_wheel.sh --digest                      print the sources' digest; build nothing
#
# Used by `make wheel`, tools/install.sh and the Ansible role, so the three build the same way.
# Only what the wheel is made of (edge/, pyproject.toml, README.md, LICENSE*) is copied to a
# scratch folder and built there, so a stale build/ or egg-info in the checkout cannot leak
# in; a fixed SOURCE_DATE_EPOCH makes the same sources give the same wheel bytes. The digest
# covers exactly those files: the installer compares it with the installed one and skips the
# build (and any network) when nothing changed.
#
# When --python already has a setuptools that pyproject.toml accepts (Debian bookworm's 66 is
# enough), the build uses it (pip --no-build-isolation) and needs no network; otherwise pip
# fetches setuptools into an isolated build environment.
#
# Options:
#   --python FILE   the Python whose pip builds the wheel (default: python3)
#   --out DIR       where the wheel is written (default: dist/ of this checkout)
#
# Exit codes: 0 done, 1 failed, 2 usage error.
set -eu

PROG=build_wheel.sh
SRC_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
PYTHON=python3
OUT_DIR=$SRC_DIR/dist
ACTION=build
# 1980-01-01, the earliest time a zip entry can carry.
REPRODUCIBLE_EPOCH=315532800

# shellcheck source=tools/script_helpers.sh disable=SC1091  # shellcheck runs without -x in the tests
. "$SRC_DIR/tools/script_helpers.sh"

while [ $# -gt 0 ]; do
    case $1 in
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --out) need_value "$@"; OUT_DIR=$2; shift 2 ;;
        --digest) ACTION=digest; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done

# The files a wheel is made of, relative to the checkout, one per line, sorted.
wheel_sources() {
    (
        cd -- "$SRC_DIR"
        find edge -type f ! -path '*/__pycache__/*' ! -name '*.pyc'
        for name in pyproject.toml README.md LICENSE*; do
            if [ -f "$name" ]; then echo "$name"; fi
        done
    ) | LC_ALL=C sort
}

if [ "$ACTION" = digest ]; then
    # Names and contents: a renamed file changes the digest as much as an edited one.
    (cd -- "$SRC_DIR" && wheel_sources | while IFS= read -r name; do sha256sum -- "$name"; done) \
        | sha256sum | cut -d' ' -f1
    exit 0
fi

for shipped in "$SRC_DIR"/edge/models/*.tflite; do
    [ -f "$shipped" ] || die "'$SRC_DIR/edge/models/' holds no .tflite model: the wheel ships one (make shipped-model writes it)"
done
command -v "$PYTHON" >/dev/null 2>&1 || die "--python '$PYTHON' is not an executable"

SCRATCH=$(mktemp -d)
mkdir -- "$SCRATCH/src"
(cd -- "$SRC_DIR" && wheel_sources | while IFS= read -r name; do
    mkdir -p -- "$SCRATCH/src/$(dirname -- "$name")"
    cp -- "$name" "$SCRATCH/src/$name"
done)

# The device wheel declares only the device extras: `tools` (TensorFlow, onnx) and `test` serve a
# checkout, whose tools/ and tests/ the wheel does not carry anyway.
"$PYTHON" - "$SCRATCH/src/pyproject.toml" <<'EOF' || exit 1
import re, sys, tomllib
path = sys.argv[1]
with open(path, encoding="utf-8") as file:
    text = file.read()
for extra in ("tools", "test"):
    text, found = re.subn(rf"(?ms)^{extra} = \[.*?^\]\n", "", text)
    if found != 1:
        sys.exit(f"build_wheel.sh: error: pyproject.toml: extra {extra!r} is not one `{extra} = [...]` block")
tomllib.loads(text)  # still valid TOML
with open(path, "w", encoding="utf-8") as file:
    file.write(text)
EOF

# The setuptools pyproject.toml asks for, and whether this Python has it (plus the wheel
# package, which setuptools before 70.1 needs for bdist_wheel).
isolation=--no-build-isolation
if ! "$PYTHON" - "$SCRATCH/src/pyproject.toml" <<'EOF' >/dev/null 2>&1
import re, sys, tomllib
from importlib.metadata import version

def major_minor(text):
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])

(requirement,) = [r for r in tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"] if r.startswith("setuptools")]
minimum = major_minor(requirement.split(">=", 1)[1]) if ">=" in requirement else (0,)
have = major_minor(version("setuptools"))
if have < minimum:
    sys.exit(1)
if have < (70, 1):
    import wheel.bdist_wheel  # noqa: F401
EOF
then
    isolation=
    printf '%s: %s has no usable setuptools: pip fetches one for the build\n' "$PROG" "$PYTHON" >&2
fi

mkdir -p -- "$OUT_DIR"
# shellcheck disable=SC2086 # $isolation is one flag or nothing
SOURCE_DATE_EPOCH=$REPRODUCIBLE_EPOCH PIP_DISABLE_PIP_VERSION_CHECK=1 "$PYTHON" -m pip wheel --quiet --no-deps \
    $isolation --wheel-dir "$SCRATCH/wheelhouse" "$SCRATCH/src" >&2 \
    || die "building the wheel failed (see pip's message above)"
built=$(find "$SCRATCH/wheelhouse" -name 'edge_face-*.whl')
[ "$(printf '%s\n' "$built" | grep -c .)" -eq 1 ] || die "pip wheel did not produce exactly one edge_face wheel"
# Every file of the package must be in the wheel: package data left out (the model) would
# otherwise only show on the device.
(cd -- "$SCRATCH/src" && find edge -type f) | "$PYTHON" -c '
import sys, zipfile
missing = sorted(set(sys.stdin.read().split()) - set(zipfile.ZipFile(sys.argv[1]).namelist()))
if missing:
    sys.exit("build_wheel.sh: error: the wheel lacks " + ", ".join(missing) + ": see [tool.setuptools.package-data]")
' "$built" || exit 1
wheel=$OUT_DIR/$(basename -- "$built")
# Through a temp file and a rename: a reader never sees half a wheel.
cp -- "$built" "$wheel.tmp"
mv -f -- "$wheel.tmp" "$wheel"
printf '%s\n' "$wheel"
