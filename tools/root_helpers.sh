# Sourced by tools/arm64_check.sh, tools/ha_check.sh and tools/fleet/bench.sh (after they
# define die and note): the Debian mirror, phase timing, tracked mounts and an rm -rf that is
# safe next to the bind mounts of the Debian roots they build. Not a script of its own.
# shellcheck shell=bash

# ---- Debian ------------------------------------------------------------------------------
# The mirror to debootstrap Debian $1 from: $EDGE_FACE_DEBIAN_MIRROR, else the one serving
# that suite in the host's apt sources, else deb.debian.org.
debian_mirror() {
    local uri
    # shellcheck disable=SC2016  # $(...) is apt's field syntax, not the shell's
    uri=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 'Identifier: Packages' 2>/dev/null \
        | awk -v suite="$1" '$2 == suite {print $1; exit}')
    echo "${EDGE_FACE_DEBIAN_MIRROR:-${uri:-http://deb.debian.org/debian/}}"
}

# ---- time keeping -------------------------------------------------------------------------
STARTED=$SECONDS
PHASE_STARTED=$SECONDS
phase() {
    note "[$((SECONDS - STARTED))s] $*"
    PHASE_STARTED=$SECONDS
}
phase_done() { note "    done in $((SECONDS - PHASE_STARTED))s"; }

# ---- mounts ------------------------------------------------------------------------------
MOUNTS=()
RUN_DIR=     # this run's scratch folder, removed at exit
BUILD_TMP=() # half-built roots and tools, removed at exit

mount_tracked() {  # mount_tracked TARGET MOUNT-ARGS...
    local target=$1
    shift
    mount "$@" "$target"
    MOUNTS+=("$target")
}

# Every mount point at or below $1, deepest first.
mounts_under() {
    local root
    root=$(realpath -m -- "$1")
    findmnt -rn -o TARGET | awk -v root="$root" '$0 == root || index($0, root "/") == 1' | sort -r
}

unmount_under() {
    local target
    while read -r target; do
        if [[ -n $target ]]; then umount "$target" 2>/dev/null || umount -l "$target"; fi
    done < <(mounts_under "$1")
}

# rm -rf that refuses to run while anything is mounted below (a bound /dev must never be
# emptied) and never leaves the file system it starts on.
remove_tree() {
    [[ -e $1 ]] || return 0
    unmount_under "$1"
    [[ -z $(mounts_under "$1") ]] || die "refusing to delete $1: something is still mounted below it"
    rm -rf --one-file-system -- "$1"
}

# ---- the run ------------------------------------------------------------------------------
# enter_run FLAG-VARIABLE WHAT SCRIPT ARGS...: re-run SCRIPT with ARGS in a private mount
# namespace (whatever happens to it, its mounts die with it; FLAG-VARIABLE marks the re-run),
# then arm the caller's cleanup, create $CACHE_DIR and hold its lock (WHAT names the holder).
enter_run() {
    local flag=$1 what=$2 script=$3
    shift 3
    if [[ -z ${!flag:-} ]] && unshare --mount --propagation private true 2>/dev/null; then
        exec env "$flag=1" unshare --mount --propagation private -- "$BASH" "$script" "$@"
    fi
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$CACHE_DIR"
    CACHE_DIR=$(realpath -- "$CACHE_DIR")
    exec 9>"$CACHE_DIR/.lock"
    flock -w 3600 9 || die "another $what holds $CACHE_DIR/.lock"
}

# What the caller's EXIT trap runs after stopping its own processes: unmount what
# mount_tracked mounted (newest first), then remove $RUN_DIR and every $BUILD_TMP folder.
release_run() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
    if [[ -n $RUN_DIR ]]; then remove_tree "$RUN_DIR"; fi
    for i in "${BUILD_TMP[@]}"; do remove_tree "$i"; done
}
