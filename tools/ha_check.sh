#!/usr/bin/env bash
# Proof against a real Home Assistant: a pinned Home Assistant core in a Debian trixie root
# (Python 3.13, as HA needs), a mosquitto on a free loopback port, onboarding and the MQTT
# config flow done over HA's REST API, then the real daemon on a replay of real photos,
# checked from HA's REST and websocket APIs by tools/ha/check.py (entities, states, controls,
# removals, `edge-face forget`, HA's log).
#
# Needs root (debootstrap, chroot, mounts) and, on the first run only, network to the Debian
# mirror and the package index the host's pip uses. The root, with Home Assistant and every
# requirement it installs at its first start, is cached in --cache; the cached run needs no
# network (HA runs with --skip-pip). All mounts live in a private mount namespace.
set -euo pipefail

readonly SUITE=trixie
readonly HA_VERSION=2026.2.3
# gcc and the headers: a few of HA's pinned requirements (lru-dict) have no cp313 wheel.
readonly DEBOOTSTRAP_INCLUDE=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates
readonly HA_VENV=/opt/homeassistant
readonly CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly HA_START_TIMEOUT=300

PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly PROJECT_ROOT

usage() {
    cat <<EOF
usage: tools/ha_check.sh [--cache DIR]

Runs Home Assistant $HA_VERSION in a cached Debian $SUITE root against a local mosquitto,
sets it up over its REST API, runs edge-face on a replay and checks what Home Assistant
shows. Exit 0 on PASS, 1 on a failed check, 2 on a usage or setup error. Needs root.

  --cache DIR    where the root file system is kept between runs
                 (default: \$EDGE_FACE_HA_CACHE or ~/.cache/edge-face/ha)
  -h, --help     this text

Environment: EDGE_FACE_UPSTREAM_DIR (photos, default <project>/../shared/upstream),
EDGE_FACE_HOST_PYTHON (host interpreter, default <project>/.venv/bin/python),
EDGE_FACE_DEBIAN_MIRROR (default: the host's apt mirror for the suite, else deb.debian.org).
EOF
}

die() { echo "ha-check: $*" >&2; exit 2; }
note() { echo "ha-check: $*" >&2; }

parse_args() {
    CACHE_DIR=${EDGE_FACE_HA_CACHE:-${HOME:-/root}/.cache/edge-face/ha}
    while (($#)); do
        case $1 in
            -h | --help) usage; exit 0 ;;
            --cache) (($# >= 2)) || die "--cache needs a value"; CACHE_DIR=$2; shift 2 ;;
            --cache=*) CACHE_DIR=${1#*=}; shift ;;
            *) die "unknown argument '$1' (see --help)" ;;
        esac
    done
    [[ -n $CACHE_DIR ]] || die "--cache: empty path"
}

check_inputs() {
    UPSTREAM_DIR=${EDGE_FACE_UPSTREAM_DIR:-$PROJECT_ROOT/../shared/upstream}
    HOST_PYTHON=${EDGE_FACE_HOST_PYTHON:-$PROJECT_ROOT/.venv/bin/python}
    MODEL=$PROJECT_ROOT/models/build/version-slim-320-int8.tflite
    [[ -f $MODEL ]] || die "model $MODEL is missing (build it: make model)"
    [[ -x $HOST_PYTHON ]] || die "host python $HOST_PYTHON is missing (set EDGE_FACE_HOST_PYTHON)"
    [[ -d $UPSTREAM_DIR/images ]] || die "photo folder $UPSTREAM_DIR/images is missing (set EDGE_FACE_UPSTREAM_DIR)"
    command -v mosquitto >/dev/null || die "mosquitto is not installed (make system-deps)"
    [[ $(id -u) == 0 ]] || die "needs root (debootstrap, chroot, mounts)"
}

# shellcheck source=tools/root_helpers.sh disable=SC1091  # shellcheck runs without -x in the tests
. "$PROJECT_ROOT/tools/root_helpers.sh"

# ---- processes and clean-up -------------------------------------------------------------
PIDS=()

# stop_pid PID SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < $2 * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local status=$? i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}" 30; done
    PIDS=()
    release_run
    exit "$status"
}

free_port() { "$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ---- the root file system -----------------------------------------------------------------
mount_root() {  # mount_root ROOT [network]
    mount_tracked "$1/proc" -t proc proc
    mount_tracked "$1/sys" -t sysfs -o ro sysfs
    mount_tracked "$1/dev" --bind /dev
    if [[ ${2:-} == network ]]; then
        mount_tracked "$1/etc/resolv.conf" --bind "$(realpath /etc/resolv.conf)"
    fi
}

unmount_root() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
    done
    MOUNTS=()
}

# root_command ROOT: sets ROOT_COMMAND to the prefix that runs a program in ROOT with a clean
# environment (the CA bundle for pip and HA's uv; the host's proxy settings). An array, not a
# function: a program started in the background must be $! itself, so it can be stopped.
root_command() {
    local -a proxies=()
    local proxy
    for proxy in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
        if [[ -n ${!proxy:-} ]]; then proxies+=("$proxy=${!proxy}"); fi
    done
    ROOT_COMMAND=(chroot "$1" /usr/bin/env -i "PATH=$HA_VENV/bin:$CHROOT_PATH" HOME=/root LANG=C.UTF-8 TZ=UTC
        SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off "${proxies[@]}")
}

# The configuration.yaml of every run: HA's http on loopback, the API, the config panel's
# REST endpoints (config flows), onboarding; no default_config (nothing we do not check).
write_ha_config() {  # write_ha_config DIR PORT
    mkdir -p "$1"
    cat >"$1/configuration.yaml" <<EOF
homeassistant:
  name: edge-face check
  latitude: 0
  longitude: 0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: DE
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: $2
api:
config:
onboarding:
logger:
  default: info
EOF
}

# Start HA in ROOT with config DIR (a path inside the root); sets HA_PID. Extra args follow.
start_ha() {  # start_ha ROOT DIR LOG ARGS...
    local root=$1 dir=$2 log=$3
    shift 3
    root_command "$root"
    "${ROOT_COMMAND[@]}" "$HA_VENV/bin/hass" -c "$dir" "$@" >"$log" 2>&1 &
    HA_PID=$!
    PIDS+=("$HA_PID")
}

wait_for_line() {  # wait_for_line FILE TEXT PID TIMEOUT
    local i
    for ((i = 0; i < $4 * 5; i++)); do
        if grep -qF -- "$2" "$1" 2>/dev/null; then return 0; fi
        kill -0 "$3" 2>/dev/null || return 1
        sleep 0.2
    done
    return 1
}

ensure_root() {
    local key mirror tmp
    key=$(echo "$SUITE amd64 minbase $DEBOOTSTRAP_INCLUDE homeassistant==$HA_VERSION" | sha256sum | cut -c1-12)
    ROOTFS=$CACHE_DIR/root-$SUITE-ha$HA_VERSION-$key
    [[ -f $ROOTFS/.complete ]] && return 0
    remove_tree "$ROOTFS"
    mirror=$(debian_mirror "$SUITE")
    phase "building the $SUITE root with Home Assistant $HA_VERSION (first run only; minutes)"
    tmp=$(mktemp -d "$CACHE_DIR/root.tmp.XXXXXX")
    BUILD_TMP+=("$tmp")
    command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
        || die "apt-get install debootstrap failed"
    debootstrap --arch=amd64 --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" "$SUITE" "$tmp" "$mirror" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 || die "debootstrap failed, see $CACHE_DIR/debootstrap.log"
    # The host's CA bundle: pip and HA's uv inside must trust what the host trusts (a proxy's CA).
    cp /etc/ssl/certs/ca-certificates.crt "$tmp/etc/ssl/certs/ca-certificates.crt"
    mount_root "$tmp" network
    local log=$CACHE_DIR/build.log
    # HA's own constraints file (shipped in its wheel) pins every requirement, as its docker
    # image does: without it pip backtracks for many minutes through loose dependencies.
    root_command "$tmp"
    "${ROOT_COMMAND[@]}" /bin/sh -ec "
        python3 -m venv $HA_VENV
        mkdir -p /tmp/ha-wheel
        $HA_VENV/bin/pip download -q --no-deps -d /tmp/ha-wheel homeassistant==$HA_VERSION
        $HA_VENV/bin/python - <<'PY'
import glob, json, zipfile
wheel = zipfile.ZipFile(glob.glob('/tmp/ha-wheel/homeassistant-*.whl')[0])
open('/tmp/ha-wheel/constraints.txt', 'wb').write(wheel.read('homeassistant/package_constraints.txt'))
# The MQTT integration's requirements (paho-mqtt), installed now: the check runs with --skip-pip.
mqtt = json.loads(wheel.read('homeassistant/components/mqtt/manifest.json'))
open('/tmp/ha-wheel/mqtt.txt', 'w').write('\n'.join(mqtt['requirements']) + '\n')
PY
        $HA_VENV/bin/pip install -q -c /tmp/ha-wheel/constraints.txt homeassistant==$HA_VERSION -r /tmp/ha-wheel/mqtt.txt
        rm -rf /tmp/ha-wheel /root/.cache/pip
    " >"$log" 2>&1 || { tail -n 30 "$log" >&2; die "installing Home Assistant failed (log: $log)"; }
    # One start with network: HA installs its default integrations' requirements (frontend,
    # backup, ...) at first start; done here, the cached runs start offline.
    local port
    port=$(free_port)
    write_ha_config "$tmp/opt/ha-warm-up" "$port"
    start_ha "$tmp" /opt/ha-warm-up "$CACHE_DIR/warm-up.log"
    wait_for_line "$CACHE_DIR/warm-up.log" "Home Assistant initialized" "$HA_PID" "$HA_START_TIMEOUT" \
        || die "Home Assistant did not start in the new root (log: $CACHE_DIR/warm-up.log)"
    stop_pid "$HA_PID" 60
    PIDS=()
    rm -rf "$tmp/opt/ha-warm-up"
    unmount_root
    touch "$tmp/.complete"
    mv -T "$tmp" "$ROOTFS"
    phase_done
}

# ---- the check ----------------------------------------------------------------------------
run_check() {
    mount_root "$ROOTFS"
    RUN_DIR=$(mktemp -d "$ROOTFS/tmp/ha-run.XXXXXX")
    local inside=${RUN_DIR#"$ROOTFS"} ha_port mqtt_port status=0
    ha_port=$(free_port)
    mqtt_port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt_port" >"$RUN_DIR/mosquitto.conf"
    mosquitto -c "$RUN_DIR/mosquitto.conf" >"$RUN_DIR/mosquitto.log" 2>&1 &
    PIDS+=("$!")
    write_ha_config "$RUN_DIR/config" "$ha_port"
    phase "Home Assistant $HA_VERSION on 127.0.0.1:$ha_port, mosquitto on 127.0.0.1:$mqtt_port"
    start_ha "$ROOTFS" "$inside/config" "$RUN_DIR/hass.out" --skip-pip
    (cd "$PROJECT_ROOT" && PYTHONPATH=$PROJECT_ROOT "$HOST_PYTHON" -m tools.ha.check \
        --ha-url "http://127.0.0.1:$ha_port" --ha-pid "$HA_PID" --ha-log "$RUN_DIR/config/home-assistant.log" \
        --mqtt-port "$mqtt_port" --model "$MODEL" --photos "$UPSTREAM_DIR/images" --work "$RUN_DIR/work") \
        || status=$?
    local results=$CACHE_DIR/last-run
    rm -rf "$results"
    mkdir -p "$results"
    cp "$RUN_DIR/config/home-assistant.log" "$RUN_DIR/hass.out" "$RUN_DIR/mosquitto.log" "$results/" 2>/dev/null || true
    cp "$RUN_DIR"/work/*.log "$results/" 2>/dev/null || true
    return "$status"
}

main() {
    parse_args "$@"
    check_inputs
    enter_run EDGE_FACE_HA_UNSHARED "HA check" "${BASH_SOURCE[0]}" "$@"
    local leftover
    for leftover in "$CACHE_DIR"/root.tmp.*; do remove_tree "$leftover"; done
    ensure_root
    local status=0
    run_check || status=$?
    note "total $((SECONDS - STARTED))s; logs of this run in $CACHE_DIR/last-run"
    if ((status == 0)); then echo "ha check: PASS"; else echo "ha check: FAIL"; fi
    exit "$status"
}

main "$@"
