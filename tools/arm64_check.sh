#!/usr/bin/env bash
# Proof on the Pi's architecture: install the device package in emulated aarch64 Debian
# userlands, bookworm (Python 3.11, numpy 1 or 2, as Raspberry Pi OS Bookworm) and trixie
# (Python 3.13, numpy 2, as Raspberry Pi OS Trixie), and check that `edge-face detect --json`
# finds the same faces there as on the host, with ai-edge-litert and (bookworm only: it has
# cp311 wheels only and needs numpy<2) tflite-runtime 2.14, on each Pi's CPU model: qemu
# emulates a Cortex-A53 (Pi 3, Zero 2 W), A72 (Pi 4) and A76 (Pi 5) with their feature sets,
# so XNNPACK picks the kernels it picks on that Pi (qemu's default CPU has features no Pi has).
#
# Needs root (debootstrap, chroot, mounts, binfmt_misc) and network to the Debian mirror and
# the package index the host's pip uses. Everything built is cached in --cache; all mounts
# live in a private mount namespace and are also unmounted on exit.
# Emulated run times say nothing about a Pi's speed: this checks results, not timings.
set -euo pipefail

readonly DEFAULT_SUITES=bookworm,trixie
readonly DEFAULT_CPUS=cortex-a53,cortex-a72,cortex-a76
readonly DEBOOTSTRAP_INCLUDE=python3,python3-venv,python3-pip,ca-certificates
# Debian 12's qemu 7.2 makes ai-edge-litert segfault in allocate_tensors/invoke; 8 is the
# first major release without that fault that Debian packages (bookworm-backports has 10).
readonly MIN_QEMU_MAJOR=8
readonly BINFMT_NAME=edge-face-aarch64
readonly BINFMT_MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
readonly BINFMT_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
readonly CHROOT_VENVS=/opt/edge-face-venvs
readonly CHROOT_RUN=/opt/edge-face-run
readonly CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly VENV_KINDS=(litert tflite-runtime)
declare -A INTERPRETER_OF=([litert]=ai_edge_litert [tflite-runtime]=tflite_runtime)
# tflite-runtime 2.14 (its last release) has aarch64 wheels for CPython 3.8-3.11 only.
readonly TFLITE_RUNTIME_PYTHONS="3.8 3.9 3.10 3.11"

PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly PROJECT_ROOT

usage() {
    cat <<EOF
usage: tools/arm64_check.sh [--cache DIR] [--model PATH] [--images N] [--qemu PATH]
                            [--suites LIST] [--cpus LIST]

Runs edge-face detect in emulated Debian arm64 chroots (bookworm and trixie) on each Pi's
CPU model, with ai-edge-litert and, where it installs, tflite-runtime 2.14, and compares
the faces with the host's run of the same interpreter. Exit 0 on PASS, 1 on a mismatch,
2 on a usage or setup error. Needs root.

  --cache DIR    where the root file system, venvs and qemu are kept between runs
                 (default: \$EDGE_FACE_ARM64_CACHE or ~/.cache/edge-face/arm64)
  --model PATH   int8 .tflite with its .json sidecar
                 (default: models/build/version-slim-320-int8.tflite)
  --images N     how many of the upstream photos to compare (default: 4)
  --qemu PATH    a static qemu-aarch64 to use instead of the one fetched from Debian
  --suites LIST  Debian releases to check, comma-separated (default: $DEFAULT_SUITES)
  --cpus LIST    qemu CPU models, comma-separated (default: $DEFAULT_CPUS)
  -h, --help     this text

Environment: EDGE_FACE_UPSTREAM_DIR (photos, default <project>/../shared/upstream),
EDGE_FACE_HOST_PYTHON (host interpreter, default <project>/.venv/bin/python),
EDGE_FACE_DEBIAN_MIRROR (default: the host's apt mirror for each suite).
EOF
}

die() { echo "arm64-check: $*" >&2; exit 2; }
note() { echo "arm64-check: $*" >&2; }

parse_args() {
    CACHE_DIR=${EDGE_FACE_ARM64_CACHE:-${HOME:-/root}/.cache/edge-face/arm64}
    MODEL=$PROJECT_ROOT/models/build/version-slim-320-int8.tflite
    IMAGE_COUNT=4
    QEMU_OVERRIDE=
    SUITES_ARG=$DEFAULT_SUITES
    CPUS_ARG=$DEFAULT_CPUS
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            --cache | --model | --images | --qemu | --suites | --cpus)
                (($# >= 2)) || die "$1 needs a value"
                case $1 in
                    --cache) CACHE_DIR=$2 ;;
                    --model) MODEL=$2 ;;
                    --images) IMAGE_COUNT=$2 ;;
                    --qemu) QEMU_OVERRIDE=$2 ;;
                    --suites) SUITES_ARG=$2 ;;
                    --cpus) CPUS_ARG=$2 ;;
                esac
                shift 2 ;;
            --cache=* | --model=* | --images=* | --qemu=* | --suites=* | --cpus=*)
                set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ $IMAGE_COUNT =~ ^[1-9][0-9]*$ ]] || die "--images: '$IMAGE_COUNT' is not a positive integer"
    [[ -n $CACHE_DIR ]] || die "--cache: empty path"
    IFS=, read -r -a SUITES <<<"$SUITES_ARG"
    IFS=, read -r -a CPUS <<<"$CPUS_ARG"
    ((${#SUITES[@]})) || die "--suites: empty list"
    ((${#CPUS[@]})) || die "--cpus: empty list"
    local suite cpu
    for suite in "${SUITES[@]}"; do
        [[ $suite =~ ^[a-z]+$ ]] || die "--suites: '$suite' is not a Debian release name"
    done
    for cpu in "${CPUS[@]}"; do
        [[ $cpu =~ ^[a-z0-9-]+$ ]] || die "--cpus: '$cpu' is not a qemu CPU model name"
    done
}

check_inputs() {
    UPSTREAM_DIR=${EDGE_FACE_UPSTREAM_DIR:-$PROJECT_ROOT/../shared/upstream}
    HOST_PYTHON=${EDGE_FACE_HOST_PYTHON:-$PROJECT_ROOT/.venv/bin/python}
    MODEL=$(realpath -m -- "$MODEL")
    SIDECAR=${MODEL%.tflite}.json
    [[ -f $MODEL ]] || die "--model: $MODEL does not exist (build it: python -m tools.quantize)"
    [[ -f $SIDECAR ]] || die "--model: the sidecar $SIDECAR is missing (build both: python -m tools.quantize)"
    [[ -x $HOST_PYTHON ]] || die "host python $HOST_PYTHON is missing (set EDGE_FACE_HOST_PYTHON)"
    [[ -d $UPSTREAM_DIR/images ]] || die "photo folder $UPSTREAM_DIR/images is missing (set EDGE_FACE_UPSTREAM_DIR)"
    mapfile -t IMAGES < <(find "$UPSTREAM_DIR/images" -maxdepth 1 -type f -name '*.jpg' | sort -V | head -n "$IMAGE_COUNT")
    ((${#IMAGES[@]} == IMAGE_COUNT)) || die "--images: $IMAGE_COUNT asked, $UPSTREAM_DIR/images has ${#IMAGES[@]} .jpg files"
    [[ -z $QEMU_OVERRIDE || -x $QEMU_OVERRIDE ]] || die "--qemu: $QEMU_OVERRIDE is not an executable"
    [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mounts, binfmt_misc)"
}

# shellcheck source=tools/root_helpers.sh disable=SC1091  # shellcheck runs without -x in the tests
. "$PROJECT_ROOT/tools/root_helpers.sh"

# ---- clean-up -----------------------------------------------------------------------------
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local status=$?
    release_run
    exit "$status"
}

# ---- step 1: host tools -------------------------------------------------------------------
ensure_debootstrap() {
    command -v debootstrap >/dev/null && return 0
    note "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
        || die "apt-get install debootstrap failed"
}

qemu_major() { "$1" --version 2>/dev/null | sed -n 's/^qemu-aarch64 version \([0-9]*\)\..*/\1/p'; }

is_static() { LC_ALL=C ldd "$1" 2>&1 | grep -qE 'statically linked|not a dynamic executable'; }

# shellcheck disable=SC1091  # the host's file, read at run time
host_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# Download (not install: Debian's qemu-user-static of the same name may be installed or
# wanted by others) the newest qemu-user apt knows, adding bookworm-backports on a bookworm
# host whose own qemu is too old, and keep its static qemu-aarch64 in the cache.
fetch_qemu() {
    local codename candidate_major deb_dir version package
    codename=$(host_codename)
    candidate_major=$(apt-cache madison qemu-user 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}' \
        | sed 's/^[0-9]*://' | sort -V | tail -1 | cut -d. -f1)
    if [[ ${candidate_major:-0} -lt $MIN_QEMU_MAJOR && $codename == bookworm ]]; then
        local sources=/etc/apt/sources.list.d/edge-face-bookworm-backports.sources
        # shellcheck disable=SC2016  # apt's field syntax
        if ! apt-get indextargets --format '$(RELEASE)' 2>/dev/null | grep -qx bookworm-backports; then
            note "adding bookworm-backports to apt ($sources) for qemu-user >= $MIN_QEMU_MAJOR"
            cat >"$sources" <<EOF
Types: deb
URIs: $(debian_mirror bookworm)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        fi
        local backports_sources
        backports_sources=$(grep -l -r 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
            | head -1 || true)
        [[ -n $backports_sources ]] || die "bookworm-backports is configured, but not in /etc/apt/sources.list(.d)"
        # Refresh only the backports lists: the host's other lists are left as they are.
        apt-get update -q -o Dir::Etc::sourcelist="$backports_sources" -o Dir::Etc::sourceparts=- \
            -o APT::Get::List-Cleanup=0 >/dev/null || die "apt-get update of bookworm-backports failed"
    fi
    version=$(apt-cache madison qemu-user | awk -F'|' '{gsub(/ /, "", $2); print $2}' \
        | while read -r v; do echo "${v#*:} $v"; done | sort -V | tail -1 | cut -d' ' -f2)
    [[ -n $version ]] || die "apt knows no qemu-user package"
    deb_dir=$(mktemp -d "$CACHE_DIR/qemu.tmp.XXXXXX")
    BUILD_TMP+=("$deb_dir")
    (cd "$deb_dir" && apt-get download -q "qemu-user=$version" >/dev/null 2>&1) \
        || die "apt-get download qemu-user=$version failed"
    package=$(echo "$deb_dir"/qemu-user_*.deb)
    dpkg-deb -x "$package" "$deb_dir/root"
    local binary=$deb_dir/root/usr/bin/qemu-aarch64
    [[ -x $binary ]] || die "$package has no usr/bin/qemu-aarch64"
    is_static "$binary" \
        || die "qemu-user $version ships a dynamic qemu-aarch64 (pass a static one, >= $MIN_QEMU_MAJOR, with --qemu)"
    (($(qemu_major "$binary") >= MIN_QEMU_MAJOR)) \
        || die "qemu-user $version is older than $MIN_QEMU_MAJOR, where ai-edge-litert segfaults (pass a static qemu-aarch64 >= $MIN_QEMU_MAJOR with --qemu)"
    mkdir -p "$CACHE_DIR/qemu"
    install -m 0755 "$binary" "$CACHE_DIR/qemu/qemu-aarch64.new"
    mv -f "$CACHE_DIR/qemu/qemu-aarch64.new" "$CACHE_DIR/qemu/qemu-aarch64"
    remove_tree "$deb_dir"
}

ensure_qemu() {
    if [[ -n $QEMU_OVERRIDE ]]; then
        QEMU=$(realpath -- "$QEMU_OVERRIDE")
        is_static "$QEMU" || die "--qemu: $QEMU is not statically linked (binfmt F runs it inside the chroot)"
        (($(qemu_major "$QEMU") >= MIN_QEMU_MAJOR)) \
            || note "warning: $($QEMU --version | head -1) is older than $MIN_QEMU_MAJOR: ai-edge-litert is known to segfault there"
        return 0
    fi
    QEMU=$CACHE_DIR/qemu/qemu-aarch64
    if [[ ! -x $QEMU ]] || (($(qemu_major "$QEMU") < MIN_QEMU_MAJOR)); then
        fetch_qemu
    fi
}

# Register $QEMU for aarch64 ELF files. Flag F opens the emulator now, so it works inside
# the chroot where its path does not exist; P keeps argv[0]; O hands it the open binary.
# The kernel tries the newest registration first, so re-registering puts ours ahead of
# any older qemu-aarch64 entry (e.g. Debian's qemu-user-binfmt 7.2).
register_binfmt() {
    local dir=/proc/sys/fs/binfmt_misc
    if [[ ! -e $dir/register ]]; then
        mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null \
            || die "cannot mount binfmt_misc at $dir (needs root outside an unprivileged container)"
    fi
    [[ -e $dir/$BINFMT_NAME ]] && echo -1 >"$dir/$BINFMT_NAME"
    echo ":$BINFMT_NAME:M::$BINFMT_MAGIC:$BINFMT_MASK:$QEMU:OPF" >"$dir/register" \
        || die "cannot register $QEMU with binfmt_misc (no privilege to write $dir/register?)"
    local other
    for other in "$dir"/*; do
        [[ $other == "$dir/$BINFMT_NAME" || ! -f $other ]] && continue
        if grep -q '^magic 7f454c460201010000000000000000000200b700' "$other" 2>/dev/null \
            && grep -qx enabled "$other"; then
            note "note: $(basename "$other") also handles aarch64; $BINFMT_NAME was registered later and takes precedence"
        fi
    done
}

# ---- step 2: the root file system ---------------------------------------------------------
rootfs_path() {  # rootfs_path SUITE
    local key
    key=$(echo "$1 arm64 minbase $DEBOOTSTRAP_INCLUDE" | sha256sum | cut -c1-12)
    echo "$CACHE_DIR/rootfs-$1-arm64-$key"
}

# Builds the root file system of Debian $1 (arm64) at rootfs_path unless it is there.
ensure_rootfs() {
    local suite=$1
    ROOTFS=$(rootfs_path "$suite")
    [[ -d $ROOTFS ]] && return 0
    [[ -f /usr/share/debootstrap/scripts/$suite ]] \
        || die "--suites: this debootstrap does not know '$suite' (no /usr/share/debootstrap/scripts/$suite)"
    local mirror
    mirror=$(debian_mirror "$suite")
    phase "building the $suite arm64 root file system from $mirror (first run only; minutes)"
    local tmp
    tmp=$(mktemp -d "$CACHE_DIR/rootfs.tmp.XXXXXX")
    BUILD_TMP+=("$tmp")
    debootstrap --arch=arm64 --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" \
        "$suite" "$tmp" "$mirror" >"$CACHE_DIR/debootstrap-$suite.log" 2>&1 \
        || die "debootstrap of $suite failed, see $CACHE_DIR/debootstrap-$suite.log"
    unmount_under "$tmp"
    mv -T "$tmp" "$ROOTFS"
    phase_done
}

# "3.11": the Python version of the root file system's python3.
rootfs_python_version() {
    local target
    target=$(readlink "$ROOTFS/usr/bin/python3") || die "$ROOTFS has no /usr/bin/python3 link"
    echo "${target#python}"
}

# ---- step 3: mounts, venvs, the project ---------------------------------------------------
CHROOT_ENV=()
PIP_BINDS=()

read_pip_settings() {
    local kind value
    CHROOT_ENV=("PATH=$CHROOT_PATH" HOME=/root LANG=C.UTF-8 TMPDIR=/tmp PYTHONDONTWRITEBYTECODE=1)
    HOST_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    while read -r kind value; do
        case $kind in
            env) CHROOT_ENV+=("$value") ;;
            bind) PIP_BINDS+=("$value") ;;
            cert) HOST_CA_BUNDLE=$value ;;
        esac
    done < <(cd "$PROJECT_ROOT" && "$HOST_PYTHON" -m tools.arm64.pip_settings "$HOST_PYTHON")
    local proxy
    for proxy in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        if [[ -n ${!proxy:-} ]]; then CHROOT_ENV+=("$proxy=${!proxy}"); fi
    done
    [[ -f $HOST_CA_BUNDLE ]] || die "pip's CA bundle $HOST_CA_BUNDLE does not exist"
}

bind_ro() {  # bind_ro SOURCE TARGET
    mount_tracked "$2" --bind "$1"
    mount -o remount,bind,ro "$2"
}

# Mounts the chroot of $1 (the suite; ROOTFS is its root): kernel file systems, DNS and pip
# settings, its own venv folder and the run folder shared by all roots.
mount_chroot() {
    local suite=$1
    mount_tracked "$ROOTFS/proc" -t proc proc
    mount_tracked "$ROOTFS/sys" -t sysfs -o ro sysfs
    mount_tracked "$ROOTFS/dev" --bind /dev
    bind_ro "$(realpath /etc/resolv.conf)" "$ROOTFS/etc/resolv.conf"
    bind_ro "$HOST_CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
    local path
    for path in "${PIP_BINDS[@]}"; do
        mkdir -p "$ROOTFS$path"
        bind_ro "$path" "$ROOTFS$path"
    done
    mkdir -p "$CACHE_DIR/venvs-arm64-$suite" "$ROOTFS$CHROOT_VENVS" "$ROOTFS$CHROOT_RUN"
    mount_tracked "$ROOTFS$CHROOT_VENVS" --bind "$CACHE_DIR/venvs-arm64-$suite"
    mount_tracked "$ROOTFS$CHROOT_RUN" --bind "$RUN_DIR"
}

# run_on SIDE COMMAND...: SIDE is arm64 (the emulated chroot of ROOTFS, clean environment,
# emulating QEMU_CPU when set) or host.
QEMU_CPU=
run_on() {
    local side=$1
    shift
    if [[ $side == arm64 ]]; then
        local -a cpu=()
        if [[ -n $QEMU_CPU ]]; then cpu=("QEMU_CPU=$QEMU_CPU"); fi
        chroot "$ROOTFS" /usr/bin/env -i "${CHROOT_ENV[@]}" "${cpu[@]}" "$@"
    else
        "$@"
    fi
}

# The path SIDE sees for a host path: the run folder is bind-mounted at CHROOT_RUN.
path_on() {
    if [[ $1 == arm64 && $2 == "$RUN_DIR"* ]]; then echo "$CHROOT_RUN${2#"$RUN_DIR"}"; else echo "$2"; fi
}

# pip's output goes to a log that is shown only on failure: under -q it still warns about
# every local index folder that lacks a project, which drowns the report.
pip_on() {  # pip_on SIDE VENV WHAT PIP-ARGS...
    local side=$1 venv=$2 what=$3 log
    shift 3
    log=$CACHE_DIR/pip-$side${SUITE:+-$SUITE}.log
    run_on "$side" "$venv/bin/python" -m pip install -q "$@" >"$log" 2>&1 || {
        tail -n 30 "$log" >&2
        die "pip install of $what failed on $side ($venv; full log: $log)"
    }
}

# A venv per side and interpreter, holding the dependencies only (the project is reinstalled
# on each run). Its name carries a hash of the requirements, so a pyproject change builds a
# new one; .complete marks a finished build: anything without it is a leftover, rebuilt.
# Sets VENV to the path SIDE sees.
ensure_venv() {
    local side=$1 kind=$2 requirements key venv_home
    requirements=$(cd "$PROJECT_ROOT" && "$HOST_PYTHON" -m tools.arm64.requirements pyproject.toml "$kind" \
        && "$HOST_PYTHON" -m tools.arm64.requirements pyproject.toml build) \
        || die "cannot read the $kind requirements from pyproject.toml"
    # A venv is only good for the interpreter it was made with: the host's python or the
    # root file system's.
    local made_with
    if [[ $side == host ]]; then
        made_with=$("$HOST_PYTHON" -c 'import sys; print(sys._base_executable, sys.version)')
    else
        made_with=${ROOTFS##*/}
    fi
    key=$(printf '%s\n' "$made_with" "$requirements" | sha256sum | cut -c1-12)
    venv_home=$CACHE_DIR/venvs-$side
    [[ $side == arm64 ]] && venv_home=$CACHE_DIR/venvs-arm64-$SUITE
    local venv=$venv_home/$kind-$key stale
    mkdir -p "$venv_home"
    for stale in "$venv_home/$kind"-*; do
        if [[ -e $stale && $stale != "$venv" ]]; then remove_tree "$stale"; fi
    done
    VENV=$venv
    [[ $side == arm64 ]] && VENV=$CHROOT_VENVS/$kind-$key
    [[ -f $venv/.complete ]] && return 0
    phase "creating the $side${SUITE:+ $SUITE} $kind venv (first run, or pyproject.toml changed)"
    remove_tree "$venv"
    local base_python=python3
    # The host's venv python builds a venv on the same base interpreter (3.11 like the chroot).
    [[ $side == host ]] && base_python=$HOST_PYTHON
    run_on "$side" "$base_python" -m venv "$VENV" || die "cannot create a venv at $VENV on $side"
    local -a requirement_list
    mapfile -t requirement_list <<<"$requirements"
    pip_on "$side" "$VENV" "the $kind requirements" "${requirement_list[@]}"
    touch "$venv/.complete"
    phase_done
}

# The working tree as git sees it (tracked and untracked-but-not-ignored files), so neither
# .venv nor build output travels into the chroot. One copy, bind-mounted into each root,
# serves all sides.
copy_project() {
    RUN_DIR=$(mktemp -d "$CACHE_DIR/run.XXXXXX")
    mkdir -p "$RUN_DIR/src" "$RUN_DIR/model" "$RUN_DIR/images" "$RUN_DIR/out"
    local listing path
    listing=$(mktemp)
    git -C "$PROJECT_ROOT" ls-files -z --cached --others --exclude-standard >"$listing" \
        || die "$PROJECT_ROOT is not a git checkout: cannot tell the working tree from build output"
    # Files deleted in the working tree but still in the index are skipped.
    while IFS= read -r -d '' path; do
        if [[ -f $PROJECT_ROOT/$path ]]; then printf '%s\0' "$path"; fi
    done <"$listing" | tar -C "$PROJECT_ROOT" --null -T - -cf - | tar -xf - -C "$RUN_DIR/src"
    rm -f "$listing"
    cp -- "$MODEL" "$SIDECAR" "$RUN_DIR/model/"
    cp -- "${IMAGES[@]}" "$RUN_DIR/images/"
}

# One wheel, built on the host from the copy by tools/build_wheel.sh, as `make wheel`, the
# installer and the Ansible role build it (the int8 model inside), installed on every side.
build_wheel() {  # build_wheel HOST-VENV
    mkdir -p "$RUN_DIR/wheel"
    WHEEL=$("$RUN_DIR/src/tools/build_wheel.sh" --python "$1/bin/python" --out "$RUN_DIR/wheel" 2>"$CACHE_DIR/pip-wheel.log") || {
        tail -n 30 "$CACHE_DIR/pip-wheel.log" >&2
        die "building the edge-face wheel from the working tree failed (log: $CACHE_DIR/pip-wheel.log)"
    }
    [[ -f $WHEEL ]] || die "tools/build_wheel.sh printed '$WHEEL', which is not a file"
}

install_project() {  # install_project SIDE VENV
    pip_on "$1" "$2" "the edge-face wheel" --no-deps --no-index --force-reinstall "$(path_on "$1" "$WHEEL")"
}

# ---- step 4: detect and compare -----------------------------------------------------------
# run_detect SIDE KIND VENV LABEL: edge-face detect --json on the photos into out/LABEL.jsonl.
# On arm64 it runs on the CPU model in QEMU_CPU and first prints what the interpreter can
# tell about XNNPACK there (tools/arm64/xnnpack_probe.py).
run_detect() {
    local side=$1 kind=$2 venv=$3 label=$4 interpreter=${INTERPRETER_OF[$2]} image
    local -a images=()
    for image in "${IMAGES[@]}"; do images+=("$(path_on "$side" "$RUN_DIR/images/$(basename "$image")")"); done
    local out=$RUN_DIR/out/$label model_on
    model_on=$(path_on "$side" "$RUN_DIR/model/$(basename "$MODEL")")
    run_on "$side" "$venv/bin/python" -c 'import importlib.metadata as m, platform, sys
label, package = sys.argv[1:]
print(label.ljust(36) + platform.machine() + ", Python " + platform.python_version()
      + ", numpy " + m.version("numpy") + ", " + package + " " + m.version(package))' \
        "$label" "${interpreter//_/-}"
    if [[ $side == arm64 ]]; then
        # The probe is a report, not a verdict: a failure is shown, the comparison decides.
        run_on "$side" env PYTHONPATH="$(path_on "$side" "$RUN_DIR/src")" "$venv/bin/python" \
            -m tools.arm64.xnnpack_probe "$interpreter" "$model_on" 2>"$out.probe.err" | sed 's/^/    /' \
            || { echo "    (the XNNPACK probe failed:)"; tail -n 3 "$out.probe.err" | sed 's/^/    /'; }
    fi
    run_on "$side" env EDGE_FACE_INTERPRETER="$interpreter" "$venv/bin/edge-face" detect --json \
        --interpreter "$interpreter" --model "$model_on" "${images[@]}" >"$out.jsonl" 2>"$out.err" || {
        local status=$?
        cat "$out.err" >&2
        echo "edge-face detect failed on $label with $interpreter (exit status $status): FAIL"
        return 1
    }
}

FAILED_RUNS=()
SKIPPED_LINES=()

# Sets KINDS to the venv kinds that install on the root of SUITE; a kind that cannot is
# reported (SKIPPED_LINES, repeated at the end), not failed.
kinds_for_suite() {
    local python kind line
    python=$(rootfs_python_version)
    KINDS=()
    for kind in "${VENV_KINDS[@]}"; do
        if [[ $kind == tflite-runtime && " $TFLITE_RUNTIME_PYTHONS " != *" $python "* ]]; then
            line="tflite-runtime on $SUITE (Python $python): unavailable, not checked: tflite-runtime 2.14, its last release, has aarch64 wheels for Python 3.8-3.11 only and needs numpy<2; ai-edge-litert is checked there"
            note "$line"
            SKIPPED_LINES+=("$line")
            continue
        fi
        KINDS+=("$kind")
    done
}

main() {
    parse_args "$@"
    check_inputs
    enter_run EDGE_FACE_ARM64_UNSHARED "arm64 check" "${BASH_SOURCE[0]}" "$@"
    local leftover pid
    for leftover in "$CACHE_DIR"/rootfs.tmp.* "$CACHE_DIR"/qemu.tmp.* "$CACHE_DIR"/run.*; do remove_tree "$leftover"; done

    phase "host tools: debootstrap, qemu-aarch64 (static, >= $MIN_QEMU_MAJOR), binfmt_misc"
    if [[ $(uname -m) == aarch64 ]]; then
        note "the host is aarch64: no emulation needed (the CPU models are the host's own)"
        CPUS=(host)
    else
        ensure_qemu
        register_binfmt
        note "emulator: $("$QEMU" --version | head -1)"
    fi
    ensure_debootstrap
    # Missing roots are built side by side (debootstrap is mostly waiting on emulated dpkg):
    # on a cold cache that saves one root's build time.
    local suite failed=0
    local -a builders=()
    declare -A rootfs_of
    for suite in "${SUITES[@]}"; do
        rootfs_of[$suite]=$(rootfs_path "$suite")
        if [[ ! -d ${rootfs_of[$suite]} ]]; then
            ensure_rootfs "$suite" &
            builders+=($!)
        fi
    done
    for pid in "${builders[@]}"; do wait "$pid" || failed=1; done
    if ((failed)); then
        # We hold the lock: every half-built root here is one of ours.
        for leftover in "$CACHE_DIR"/rootfs.tmp.*; do remove_tree "$leftover"; done
        die "building a root file system failed (see the message above)"
    fi
    read_pip_settings

    # Each arm64 run is compared with the host running the same interpreter from the same
    # requirements: tflite-runtime 2.14 and LiteRT differ from each other by up to a
    # quantization step of the box regressions, which says nothing about the architecture.
    local kind cpu label
    declare -A venv_of
    SUITE=
    for kind in "${VENV_KINDS[@]}"; do
        ensure_venv host "$kind"
        venv_of[host-$kind]=$VENV
    done
    copy_project
    build_wheel "${venv_of[host-${VENV_KINDS[0]}]}"
    phase "edge-face detect on ${#IMAGES[@]} photos on the host"
    for kind in "${VENV_KINDS[@]}"; do
        install_project host "${venv_of[host-$kind]}"
        run_detect host "$kind" "${venv_of[host-$kind]}" "host-$kind" \
            || die "edge-face detect failed on the host with ${INTERPRETER_OF[$kind]}: nothing to compare with"
    done
    phase_done

    declare -A runs_of  # kind -> "label=file ..." of the arm64 runs
    for suite in "${SUITES[@]}"; do
        SUITE=$suite
        ROOTFS=${rootfs_of[$suite]}
        mount_chroot "$suite"
        run_on arm64 /bin/true || die "cannot run aarch64 programs in $ROOTFS (binfmt_misc registration not effective?)"
        kinds_for_suite
        for kind in "${KINDS[@]}"; do
            ensure_venv arm64 "$kind"
            venv_of[$suite-$kind]=$VENV
            install_project arm64 "$VENV"
        done
        for cpu in "${CPUS[@]}"; do
            QEMU_CPU=$cpu
            [[ $cpu == host ]] && QEMU_CPU=
            for kind in "${KINDS[@]}"; do
                label=$suite-$cpu-$kind
                phase "edge-face detect on ${#IMAGES[@]} photos: $suite arm64, -cpu $cpu, ${INTERPRETER_OF[$kind]}"
                if run_detect arm64 "$kind" "${venv_of[$suite-$kind]}" "$label"; then
                    runs_of[$kind]+=" $suite/$cpu=$label"
                else
                    FAILED_RUNS+=("$label")
                fi
                phase_done
            done
        done
        QEMU_CPU=
    done

    # Kept for a look after a FAIL; the next run replaces them.
    local results=$CACHE_DIR/last-run status=0 compared line
    remove_tree "$results"
    mkdir -p "$results"
    cp "$RUN_DIR"/out/*.jsonl "$results/" 2>/dev/null || true
    echo
    for kind in "${VENV_KINDS[@]}"; do
        [[ -n ${runs_of[$kind]:-} ]] || continue
        echo "== ${INTERPRETER_OF[$kind]}: each emulated root and CPU against the host =="
        local -a pairs=() run
        for run in ${runs_of[$kind]}; do pairs+=("${run%%=*}=$results/${run#*=}.jsonl"); done
        compared=0
        (cd "$PROJECT_ROOT" && "$HOST_PYTHON" -m tools.arm64.compare "host=$results/host-$kind.jsonl" "${pairs[@]}") \
            || compared=$?
        if ((compared > status)); then status=$compared; fi
        echo
    done
    for line in "${SKIPPED_LINES[@]}"; do echo "$line"; done
    if ((${#FAILED_RUNS[@]})); then
        echo "crashed on arm64: ${FAILED_RUNS[*]}"
        ((status >= 1)) || status=1
    fi
    note "total $((SECONDS - STARTED))s (emulated: not a measure of Pi speed); outputs in $results"
    # 1: a mismatch or a crash on arm64; 2: unreadable output.
    if ((status == 0)); then echo "arm64 check: PASS"; else echo "arm64 check: FAIL"; fi
    exit "$status"
}

main "$@"
