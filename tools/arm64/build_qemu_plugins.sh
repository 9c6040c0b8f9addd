#!/usr/bin/env bash
# Build a qemu-aarch64 (user mode) with TCG plugin support, and the instruction-counting
# plugin tools/arm64/insn_regions.c, into the cache. Debian's qemu packages ship neither:
# their qemu-user is static, and a static qemu cannot load plugins.
#
#     tools/arm64/build_qemu_plugins.sh CACHE_DIR
#
# prints two lines on success (paths of the cached files):
#     qemu PATH
#     plugin PATH
#
# The qemu source comes from Debian through a temporary deb-src entry that is removed again
# (with the source index it downloaded) whatever happens: the host's apt sources are left as
# they were. The build needs root (apt-get) only on a cold cache.
set -euo pipefail

readonly MIN_QEMU_MAJOR=10
readonly BUILD_DEPS=(meson ninja-build pkg-config gcc make libglib2.0-dev flex bison python3-pycotap)
readonly SRC_ENTRY=/etc/apt/sources.list.d/edge-face-qemu-source.sources

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly PLUGIN_SOURCE=$HERE/insn_regions.c

die() { echo "build-qemu-plugins: $*" >&2; exit 2; }
note() { echo "build-qemu-plugins: $*" >&2; }

(($# == 1)) || die "usage: tools/arm64/build_qemu_plugins.sh CACHE_DIR"
CACHE_DIR=$(realpath -m -- "$1")
QEMU_DIR=$CACHE_DIR/qemu-plugins
mkdir -p "$QEMU_DIR"

# shellcheck disable=SC1091  # the host's file, read at run time
host_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# Debian's suite whose qemu is new enough: bookworm's own is 7.2, its backports have 10.
source_suite() {
    local codename
    codename=$(host_codename)
    case $codename in
        bookworm) echo bookworm-backports ;;
        "") die "cannot tell the host's Debian release from /etc/os-release" ;;
        *) echo "$codename" ;;
    esac
}

debian_mirror() {
    local uri
    # shellcheck disable=SC2016  # apt's field syntax
    uri=$(apt-get indextargets --format '$(REPO_URI)' 'Identifier: Packages' 2>/dev/null \
        | grep -m1 '/debian/$' || true)
    echo "${uri:-http://deb.debian.org/debian/}"
}

TMP=
SOURCE_INDEXES_BEFORE=
source_indexes() { find /var/lib/apt/lists -maxdepth 1 -name '*_source_Sources*' 2>/dev/null | sort; }

# Removes the deb-src entry and the source indexes it fetched, so apt is as before.
remove_source_entry() {
    [[ -f $SRC_ENTRY ]] || return 0
    rm -f "$SRC_ENTRY"
    local index
    comm -13 <(echo "$SOURCE_INDEXES_BEFORE") <(source_indexes) | while read -r index; do
        if [[ -n $index ]]; then rm -f -- "$index"; fi
    done
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local status=$?
    remove_source_entry
    if [[ -n $TMP ]]; then rm -rf --one-file-system -- "$TMP"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- qemu-aarch64, cached per upstream version ---------------------------------------------
fetch_source() {  # fetch_source DIR: leaves qemu_*.orig.tar.xz in DIR
    local suite mirror
    suite=$(source_suite)
    mirror=$(debian_mirror)
    [[ $(id -u) == 0 ]] || die "a cold build needs root (apt-get source and build dependencies)"
    SOURCE_INDEXES_BEFORE=$(source_indexes)
    cat >"$SRC_ENTRY" <<EOF
Types: deb-src
URIs: $mirror
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q -o Dir::Etc::sourcelist="$SRC_ENTRY" -o Dir::Etc::sourceparts=- \
        -o APT::Get::List-Cleanup=0 >"$TMP/apt.log" 2>&1 || die "apt-get update of the $suite source index failed"
    # Only the upstream tarball is needed (and Debian's packaging files are not always there).
    (cd "$1" && apt-get source -q --download-only qemu >>"$TMP/apt.log" 2>&1) || true
    compgen -G "$1/qemu_*.orig.tar.*" >/dev/null \
        || { tail -n 20 "$TMP/apt.log" >&2; die "apt-get source qemu ($suite) gave no orig tarball"; }
    remove_source_entry
    note "qemu source: $(basename "$1"/qemu_*.orig.tar.*) from $suite"
    # meson >= 1.5 and pycotap: from the same suite as the source (backports on bookworm).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t "$suite" "${BUILD_DEPS[@]}" >>"$TMP/apt.log" 2>&1 \
        || { tail -n 20 "$TMP/apt.log" >&2; die "installing the qemu build dependencies from $suite failed"; }
}

build_qemu() {
    TMP=$(mktemp -d "$QEMU_DIR/build.tmp.XXXXXX")
    local started=$SECONDS
    fetch_source "$TMP"
    tar -C "$TMP" -xf "$TMP"/qemu_*.orig.tar.*
    local src
    src=$(echo "$TMP"/qemu-*/)
    mkdir -p "$src/build"
    # --disable-install-blobs: Debian's +ds tarball has no firmware blobs (not needed here).
    (cd "$src/build" && ../configure --python=/usr/bin/python3 --target-list=aarch64-linux-user \
        --enable-plugins --disable-docs --disable-system --disable-tools --disable-install-blobs \
        && make -j"$(nproc)" qemu-aarch64) >"$TMP/build.log" 2>&1 \
        || { tail -n 30 "$TMP/build.log" >&2; die "building qemu-aarch64 failed (log kept in the note above)"; }
    local version
    version=$("$src/build/qemu-aarch64" --version | sed -n 's/^qemu-aarch64 version \([0-9.]*\).*/\1/p')
    local major=${version%%.*}
    ((major >= MIN_QEMU_MAJOR)) || die "qemu $version built, but the counts here assume >= $MIN_QEMU_MAJOR"
    local dest=$QEMU_DIR/$version
    mkdir -p "$dest.tmp"
    install -m 0755 "$src/build/qemu-aarch64" "$dest.tmp/qemu-aarch64"
    install -m 0644 "$src/include/qemu/qemu-plugin.h" "$dest.tmp/qemu-plugin.h"
    rm -rf "$dest" && mv -T "$dest.tmp" "$dest"
    ln -sfn "$version" "$QEMU_DIR/current"
    note "qemu-aarch64 $version with plugin support built in $((SECONDS - started))s"
    rm -rf --one-file-system -- "$TMP"
    TMP=
}

# One build at a time; a build that died (power, kill -9) leaves a folder the next one removes.
exec 9>"$QEMU_DIR/.lock"
flock -w 3600 9 || die "another build holds $QEMU_DIR/.lock"
for stale in "$QEMU_DIR"/build.tmp.* "$QEMU_DIR"/*.tmp; do
    if [[ -e $stale ]]; then rm -rf --one-file-system -- "$stale"; fi
done
[[ -x $QEMU_DIR/current/qemu-aarch64 && -f $QEMU_DIR/current/qemu-plugin.h ]] || build_qemu
QEMU=$(realpath "$QEMU_DIR/current/qemu-aarch64")

# ---- the plugin, cached per source hash (rebuilding it takes a second) --------------------
key=$(sha256sum "$PLUGIN_SOURCE" | cut -c1-12)
PLUGIN=$(dirname "$QEMU")/insn_regions-$key.so
if [[ ! -f $PLUGIN ]]; then
    if ! command -v gcc >/dev/null || ! pkg-config --exists glib-2.0; then
        die "compiling the plugin needs gcc and libglib2.0-dev"
    fi
    # shellcheck disable=SC2046  # pkg-config prints several flags
    gcc -O2 -Wall -Wextra -Wno-unused-parameter -shared -fPIC -I"$(dirname "$QEMU")" \
        $(pkg-config --cflags glib-2.0) "$PLUGIN_SOURCE" -o "$PLUGIN.tmp" \
        || die "compiling $PLUGIN_SOURCE failed"
    mv -f "$PLUGIN.tmp" "$PLUGIN"
fi
echo "qemu $QEMU"
echo "plugin $PLUGIN"
