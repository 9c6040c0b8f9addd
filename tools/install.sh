#!/bin/sh
# Install edge-face on one Raspberry Pi (or any Debian-like host) as a systemd service.
#
#   sudo tools/install.sh [--extras tflite-runtime] [--model FILE] [--wheel FILE]
#   sudo tools/install.sh --uninstall [--purge]
#   sudo tools/install.sh --rollback-model
#
# Run it from a checkout of the project. It creates /opt/edge-face/venv (with the OS's site
# packages, so python3-picamera2 is visible), installs the package from this source tree (or
# --wheel), places the int8 model (the one shipped inside the package, or --model) under
# /opt/edge-face/models/<sha256 prefix>/ behind the links current/previous, installs
# /etc/edge-face/edge-face.toml from examples/ when there is none yet (never overwritten), an
# empty /etc/edge-face/mqtt_password credential when there is none, and
# systemd/edge-face.service, and links the command into /usr/local/bin (so `sudo edge-face ...`
# works); then enables and (re)starts the service. With no camera attached it says so and
# finishes: the service waits for the camera. Each slow step (apt, the virtualenv, pip's
# download of the dependencies, the start) is announced before it starts, pip shows its
# progress, and the last lines are the commands to run next.
# Running it again changes nothing unless an input changed (sources, wheel, extras, model,
# unit); only then is the service restarted. An unchanged re-run needs no network: the wheel
# is neither rebuilt nor reinstalled, and dependencies come from the package index only when
# the ones installed do not satisfy the package.
#
# Options:
#   --model FILE       int8 .tflite with its .json sidecar beside it
#                      (default: the slim-320 model shipped inside the package)
#   --wheel FILE       install this edge_face wheel instead of building one from the checkout
#   --config FILE      first config to install (default: examples/edge-face.toml)
#   --python FILE      Python to make the virtualenv from (default: /usr/bin/python3)
#   --extras LIST      package extras, comma-separated (tflite-runtime on 32-bit Pi OS, opencv)
#   --no-deps          install only the package, not its dependencies
#   --no-apt           do not install python3-venv / python3-picamera2 with apt-get
#   --no-systemctl     do not reload, enable, start or stop anything
#   --root DIR         install below DIR instead of / (image builds, tests); implies
#                      --no-apt and --no-systemctl, and creates no user
#   --uninstall        stop the service, remove the device from the MQTT broker and Home
#                      Assistant and delete the face gallery (edge-face forget: a broker
#                      that cannot be reached is a warning), then remove the service,
#                      /opt/edge-face, the unit and the command's link; keeps /etc/edge-face
#                      (config, credential) and /var/lib/edge-face
#   --purge            with --uninstall: remove those too (with any face gallery left in
#                      /var/lib/edge-face: biometric data), and the edge-face user
#   --rollback-model   make the previous model current again and restart
#
# Exit codes: 0 done (also when no camera is attached yet), 1 failed, 2 usage error.
set -eu

PROG=install.sh
SRC_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
SERVICE_NAME=edge-face
SERVICE=$SERVICE_NAME.service
SERVICE_USER=edge-face
INSTALL_DIR=/opt/edge-face
VENV=$INSTALL_DIR/venv
DIST_DIR=$INSTALL_DIR/dist
# What was installed into the venv (inputs digest, extras, dependencies or not): an unchanged
# re-run compares and touches nothing, so it needs no network.
STATE_FILE=$DIST_DIR/installed
MODELS_DIR=$INSTALL_DIR/models
CONFIG_DIR=/etc/edge-face
CONFIG_FILE=$CONFIG_DIR/edge-face.toml
CREDENTIAL_FILE=$CONFIG_DIR/mqtt_password
UNIT_FILE=/etc/systemd/system/$SERVICE
# The command on the shell's PATH (and sudo's secure_path): a link to the venv's entry point,
# whose #! names the venv's Python, so it runs exactly what the unit runs.
COMMAND=$VENV/bin/edge-face
COMMAND_LINK=/usr/local/bin/edge-face

ACTION=install
MODEL=
WHEEL=
INITIAL_CONFIG=$SRC_DIR/examples/edge-face.toml
PYTHON=/usr/bin/python3
EXTRAS=
NO_DEPS=
USE_APT=yes
USE_SYSTEMCTL=yes
MANAGE_USER=yes
ROOT=
PURGE=
CHANGED=
NO_CAMERA=

say() { printf '%s: %s\n' "$PROG" "$*"; }
changed() { CHANGED=yes; say "$*"; }
# shellcheck source=tools/script_helpers.sh disable=SC1091  # shellcheck runs without -x in the tests
. "$SRC_DIR/tools/script_helpers.sh"

while [ $# -gt 0 ]; do
    case $1 in
        --model) need_value "$@"; MODEL=$2; shift 2 ;;
        --wheel) need_value "$@"; WHEEL=$2; shift 2 ;;
        --config) need_value "$@"; INITIAL_CONFIG=$2; shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --extras) need_value "$@"; EXTRAS=$2; shift 2 ;;
        --root) need_value "$@"; ROOT=${2%/}; shift 2 ;;
        --no-deps) NO_DEPS=yes; shift ;;
        --no-apt) USE_APT=; shift ;;
        --no-systemctl) USE_SYSTEMCTL=; shift ;;
        --uninstall) ACTION=uninstall; shift ;;
        --purge) PURGE=yes; shift ;;
        --rollback-model) ACTION=rollback; shift ;;
        -h|--help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done
[ -z "$PURGE" ] || [ "$ACTION" = uninstall ] || usage_error "--purge only goes with --uninstall"

if [ -n "$ROOT" ]; then
    # A scratch root is files only: no packages, no users, no systemd of its own.
    [ -d "$ROOT" ] || usage_error "--root '$ROOT' is not a folder"
    USE_APT='' USE_SYSTEMCTL='' MANAGE_USER=''
elif [ "$(id -u)" -ne 0 ]; then
    die "run as root (sudo $0 ...), or use --root DIR for a scratch install"
fi
if [ -n "$USE_SYSTEMCTL" ] && [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: the service is installed but not started"
    USE_SYSTEMCTL=
fi

# --- helpers ---------------------------------------------------------------------------------

# install_file SRC DEST MODE OWNER:GROUP: copy when the content differs; fix mode and owner.
install_file() {
    if ! cmp -s -- "$1" "$ROOT$2"; then
        # Through a temp file in the same folder and a rename: never a half-written file.
        tmp=$(mktemp "$ROOT$2.XXXXXX")
        cp -- "$1" "$tmp"
        chmod "$3" "$tmp"
        if [ "$(id -u)" -eq 0 ]; then chown "$4" "$tmp"; fi
        mv -f -- "$tmp" "$ROOT$2"
        changed "installed $2"
    fi
    ensure_mode "$2" "$3" "$4"
}

# ensure_mode PATH MODE OWNER:GROUP for a file that already exists. Ownership is only set by
# root; an unprivileged --root install keeps the caller's own.
ensure_mode() {
    if [ "$(id -u)" -eq 0 ]; then
        want="$(printf '%o' "0$2") $3" have=$(stat -c '%a %U:%G' -- "$ROOT$1")
    else
        want=$(printf '%o' "0$2") have=$(stat -c '%a' -- "$ROOT$1")
    fi
    if [ "$have" != "$want" ]; then
        chmod "$2" "$ROOT$1"
        if [ "$(id -u)" -eq 0 ]; then chown "$3" "$ROOT$1"; fi
        changed "set $1 to $2 $3"
    fi
}

ensure_dir() {
    if [ ! -d "$ROOT$1" ]; then
        mkdir -p -- "$ROOT$1"
        changed "created $1"
    fi
    ensure_mode "$1" "$2" "$3"
}

ensure_link() {  # ensure_link TARGET LINK
    if [ "$(readlink -- "$ROOT$2" 2>/dev/null || true)" != "$1" ]; then
        ln -sfn -- "$1" "$ROOT$2"
        changed "$2 -> $1"
    fi
}

config_group() {
    if getent group "$SERVICE_USER" >/dev/null 2>&1 && [ -z "$ROOT" ]; then echo "$SERVICE_USER"; else echo root; fi
}

sha256_of() { sha256sum -- "$1" | cut -d' ' -f1; }

systemctl_do() { if [ -n "$USE_SYSTEMCTL" ]; then systemctl "$@"; fi; }

# --- install steps ---------------------------------------------------------------------------

# ensure_picamera2_version: an installed python3-picamera2 older than MIN_PICAMERA2_VERSION of
# the picamera2 source (stated once, in edge/sources/picamera2.py) has no capture timeout, so
# a pulled camera cable would hang the service: upgrade it with apt, or stop with the reason.
# The package database is the target's ($ROOT/var/lib/dpkg).
ensure_picamera2_version() {
    line=$(dpkg-query --admindir="$ROOT/var/lib/dpkg" -W -f='${Status} ${Version}' python3-picamera2 2>/dev/null) || return 0
    case $line in "install ok installed "*) installed=${line##* } ;; *) return 0 ;; esac
    minimum=$(sed -n 's/^MIN_PICAMERA2_VERSION = "\(.*\)"$/\1/p' "$SRC_DIR/edge/sources/picamera2.py")
    [ -n "$minimum" ] || die "no MIN_PICAMERA2_VERSION in $SRC_DIR/edge/sources/picamera2.py: run this from a checkout"
    dpkg --compare-versions "$installed" lt "$minimum" || return 0
    fix="sudo apt install --only-upgrade python3-picamera2, or run this without --no-apt"
    if [ -n "$ROOT" ]; then fix="upgrade python3-picamera2 in $ROOT first"; fi
    if [ -n "$USE_APT" ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --only-upgrade python3-picamera2
        installed=$(dpkg-query -W -f='${Version}' python3-picamera2)
        if ! dpkg --compare-versions "$installed" lt "$minimum"; then
            changed "upgraded python3-picamera2 to $installed (edge-face needs $minimum or later)"
            return 0
        fi
        fix="apt offers no newer one: update the OS (sudo apt update && sudo apt full-upgrade) and run this again"
    fi
    die "python3-picamera2 $installed is older than $minimum, which edge-face needs (older ones have no capture timeout: a pulled camera cable would hang the service); $fix"
}

install_os_packages() {
    [ -n "$USE_APT" ] || { ensure_picamera2_version; return 0; }
    # setuptools and wheel let the venv build the package wheel without a download.
    # python3-numpy: the OS's numpy (Raspberry Pi OS ships it; picamera2 needs it) serves the
    # venv through its site packages, so a --no-deps install can still check its config.
    packages="python3-venv python3-setuptools python3-wheel python3-numpy"
    # python3-picamera2 (with libcamera) exists only in Raspberry Pi OS's archive.
    if [ -e /etc/rpi-issue ]; then packages="$packages python3-picamera2"; fi
    missing=
    for package in $packages; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $package"
    done
    if [ -n "$missing" ]; then
        say "installing OS packages with apt-get:$missing"
        apt-get update
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
        changed "installed OS packages:$missing"
    fi
    ensure_picamera2_version
}

create_user() {
    [ -n "$MANAGE_USER" ] || return 0
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        # No login, no home of its own: systemd makes /var/lib/edge-face (StateDirectory=).
        useradd --system --user-group --home-dir /var/lib/edge-face --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-face camera face detector" "$SERVICE_USER"
        changed "created system user $SERVICE_USER"
    fi
    if ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx video; then
        usermod -a -G video "$SERVICE_USER"
        changed "added $SERVICE_USER to group video (camera devices)"
    fi
}

# check_model FILE WHAT: the model exists, its sidecar too, and the sidecar names its sha256.
check_model() {
    [ -f "$1" ] || die "$2 '$1': no such file"
    sidecar=${1%.tflite}.json
    [ -f "$sidecar" ] || die "$2 '$1': its sidecar '$sidecar' is missing"
    model_sha=$(sha256_of "$1")
    sidecar_sha=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("tflite_sha256", ""))' "$sidecar") \
        || die "$2 '$1': sidecar '$sidecar' is not valid JSON"
    [ "$model_sha" = "$sidecar_sha" ] || die "$2 '$1': sha256 $model_sha differs from tflite_sha256 in '$sidecar'"
}

check_inputs() {
    [ -x "$PYTHON" ] || die "--python '$PYTHON' is not an executable (apt-get install python3)"
    if [ -n "$MODEL" ]; then check_model "$MODEL" --model; fi
    [ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "--wheel '$WHEEL': no such file"
    [ -f "$SRC_DIR/systemd/$SERVICE" ] || die "'$SRC_DIR/systemd/$SERVICE' is missing: run this script from a checkout"
    case $EXTRAS in
        *[!a-z0-9,_-]*) usage_error "--extras '$EXTRAS': only names separated by commas (tflite-runtime, opencv)" ;;
    esac
    case ",$EXTRAS," in
        *,tflite-runtime,*)
            # tflite-runtime 2.14, its last release, has wheels for Python <= 3.11 only and needs numpy<2.
            "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] > (3, 11))' \
                || usage_error "--extras tflite-runtime: tflite-runtime 2.14 (its last release) has no wheel for Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') (Raspberry Pi OS Trixie) and needs numpy<2; leave it out, ai-edge-litert is installed instead" ;;
    esac
}

# venv_python ARGS...: the venv's Python, isolated (-I) from the caller's folder and
# environment, so a checkout in the current folder cannot shadow the installed package.
venv_python() { (cd / && "$ROOT$VENV/bin/python" -I "$@"); }

build_wheel() {
    SCRATCH=$(mktemp -d)
    say "building the edge-face wheel from $SRC_DIR"
    WHEEL=$("$SRC_DIR/tools/build_wheel.sh" --python "$ROOT$VENV/bin/python" --out "$SCRATCH") \
        || die "building the wheel failed (see the message above)"
}

# install_dependencies REQUIREMENT NAME (the wheel's path, and its name, extras appended):
# offline first, quietly (everything needed is often installed already); only when that is
# not enough from the package index, with pip's own progress (a line per package, a progress
# bar on a terminal): minutes on a Pi, which must not look hung.
install_dependencies() {
    say "checking the dependencies of $2"
    if venv_python -m pip install --quiet --disable-pip-version-check --no-index "$1" >/dev/null 2>&1; then
        return 0
    fi
    say "downloading and installing them with pip (several minutes on a Pi; pip's progress follows)"
    venv_python -m pip install --disable-pip-version-check "$1"
}

install_package() {
    ensure_dir "$INSTALL_DIR" 755 root:root
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        say "creating the virtualenv $VENV (a minute or two on a Pi)"
        # The OS's site packages hold python3-picamera2 and libcamera, which pip cannot install.
        "$PYTHON" -m venv --system-site-packages "$ROOT$VENV" \
            || die "could not create the virtualenv (apt-get install python3-venv)"
        changed "created virtualenv $VENV"
    fi
    ensure_dir "$DIST_DIR" 755 root:root
    if [ -n "$WHEEL" ]; then
        inputs="wheel $(sha256_of "$WHEEL")"
    else
        inputs="source $("$SRC_DIR/tools/build_wheel.sh" --digest)"
    fi
    dependencies=yes
    if [ -n "$NO_DEPS" ]; then dependencies=no; fi
    wanted=$(printf 'inputs %s\nextras %s\ndependencies %s\n' "$inputs" "$EXTRAS" "$dependencies")
    installed=$(cat -- "$ROOT$STATE_FILE" 2>/dev/null || true)
    # A venv made anew (or emptied by hand) holds nothing, whatever the record says.
    if [ ! -x "$ROOT$COMMAND" ]; then installed=; fi
    if [ "$wanted" = "$installed" ]; then return 0; fi
    installed_inputs=$(printf '%s\n' "$installed" | sed -n 's/^inputs //p')
    # Same sources, other extras: the wheel kept in dist/ is the one to install, no rebuild.
    kept=$(find "$ROOT$DIST_DIR" -maxdepth 1 -name 'edge_face-*.whl' | head -n 1)
    if [ -z "$WHEEL" ] && { [ "$inputs" != "$installed_inputs" ] || [ -z "$kept" ]; }; then build_wheel; fi
    if [ -n "$WHEEL" ]; then
        wheel_name=$(basename -- "$WHEEL")
        if ! cmp -s -- "$WHEEL" "$ROOT$DIST_DIR/$wheel_name"; then
            cp -- "$WHEEL" "$ROOT$DIST_DIR/$wheel_name.tmp"
            chmod 644 "$ROOT$DIST_DIR/$wheel_name.tmp"
            mv -f -- "$ROOT$DIST_DIR/$wheel_name.tmp" "$ROOT$DIST_DIR/$wheel_name"
        fi
    else
        wheel_name=$(basename -- "$kept")
    fi
    wheel=$ROOT$DIST_DIR/$wheel_name
    if [ "$inputs" != "$installed_inputs" ]; then
        # pip keeps an installed version as it is, so a rebuilt wheel of the same version is
        # forced in; dependencies are left alone by that step and then topped up.
        venv_python -m pip install --quiet --disable-pip-version-check --no-index --no-deps --force-reinstall "$wheel" \
            || die "pip could not install $wheel_name"
        changed "installed $wheel_name into $VENV"
    fi
    if [ -z "$NO_DEPS" ]; then
        install_dependencies "$wheel${EXTRAS:+[$EXTRAS]}" "$wheel_name${EXTRAS:+[$EXTRAS]}" \
            || die "pip could not install the dependencies of $wheel_name${EXTRAS:+[$EXTRAS]} (its message is above)"
    fi
    installed_extras=$(printf '%s\n' "$installed" | sed -n 's/^extras //p')
    if [ "$EXTRAS" != "$installed_extras" ]; then
        changed "package extras now: ${EXTRAS:-none}${NO_DEPS:+ (--no-deps: their packages are not installed)}"
    fi
    if [ -n "$installed" ] && [ "dependencies $dependencies" != "$(printf '%s\n' "$installed" | grep '^dependencies ')" ]; then
        changed "package dependencies: $dependencies"
    fi
    printf '%s\n' "$wanted" > "$ROOT$STATE_FILE.tmp"
    mv -f -- "$ROOT$STATE_FILE.tmp" "$ROOT$STATE_FILE"
    for old in "$ROOT$DIST_DIR"/*.whl; do
        if [ -f "$old" ] && [ "$(basename -- "$old")" != "$wheel_name" ]; then
            rm -f -- "$old"
            changed "removed old wheel $(basename -- "$old")"
        fi
    done
}

install_model() {
    if [ -z "$MODEL" ]; then
        # The model shipped inside the installed package.
        MODEL=$(venv_python -c 'from edge.models import PACKAGED_MODEL_PATH; print(PACKAGED_MODEL_PATH)') \
            || die "the installed package has no edge.models: reinstall it"
        check_model "$MODEL" "packaged model"
    fi
    release=$(printf '%s' "$model_sha" | cut -c1-16)
    name=$(basename -- "$MODEL" .tflite)
    ensure_dir "$MODELS_DIR" 755 root:root
    ensure_dir "$MODELS_DIR/$release" 755 root:root
    install_file "$MODEL" "$MODELS_DIR/$release/$name.tflite" 644 root:root
    install_file "${MODEL%.tflite}.json" "$MODELS_DIR/$release/$name.json" 644 root:root
    current=$(readlink -- "$ROOT$MODELS_DIR/current" 2>/dev/null || true)
    if [ -n "$current" ] && [ "$current" != "$release" ]; then
        ensure_link "$current" "$MODELS_DIR/previous"
    fi
    ensure_link "$release" "$MODELS_DIR/current"
    previous=$(readlink -- "$ROOT$MODELS_DIR/previous" 2>/dev/null || true)
    # Two releases stay: current and the rollback target.
    for folder in "$ROOT$MODELS_DIR"/*/; do
        folder=${folder%/}
        [ ! -L "$folder" ] || continue
        case $(basename -- "$folder") in
            "$release"|"$previous") ;;
            *) rm -rf -- "$folder"; changed "removed old model release $(basename -- "$folder")" ;;
        esac
    done
}

install_config() {
    group=$(config_group)
    ensure_dir "$CONFIG_DIR" 755 root:root
    if [ ! -e "$ROOT$CONFIG_FILE" ]; then
        [ -f "$INITIAL_CONFIG" ] || die "--config '$INITIAL_CONFIG': no such file"
        install_file "$INITIAL_CONFIG" "$CONFIG_FILE" 640 "root:$group"
    else
        ensure_mode "$CONFIG_FILE" 640 "root:$group"
    fi
    if [ ! -e "$ROOT$CREDENTIAL_FILE" ]; then
        # Empty means "no password"; LoadCredential= fails the start when the file is missing.
        (umask 077 && : > "$ROOT$CREDENTIAL_FILE")
        changed "created empty credential $CREDENTIAL_FILE (put the broker password in it)"
    fi
    ensure_mode "$CREDENTIAL_FILE" 600 root:root
    if [ -z "$ROOT" ]; then
        say "checking $CONFIG_FILE as user $SERVICE_USER"
        # As the service user: what it cannot read (a root-only file) fails here, not at start.
        verdict=$(cd / && runuser -u "$SERVICE_USER" -- "$COMMAND" check-config "$CONFIG_FILE") \
            || die "$CONFIG_FILE is not valid for user $SERVICE_USER (message above); fix it and run this again"
        say "config $verdict"
    fi
}

# find_camera: sets NO_CAMERA to the reason when the config's local camera is not there
# (source auto, picamera2, or opencv with a /dev path), so the install can finish while the
# service waits for it. Streams and files are the daemon's to open and retry.
find_camera() {
    say "looking for the camera the config names"
    config=$ROOT$CONFIG_FILE
    probe='
import sys, tomllib
from pathlib import Path
from edge.config import parse_config
from edge.models import PACKAGED_MODEL_PATH
from edge.sources.auto import select_auto_camera
from edge.sources.base import SourceError
from edge.sources.picamera2 import import_picamera2_class

path = Path(sys.argv[1])
camera = tomllib.loads(path.read_text(encoding="utf-8")).get("camera", {})
# Only [camera] matters here (the model path is given so the rest validates anywhere).
parsed = parse_config({"camera": camera, "detector": {"model": str(PACKAGED_MODEL_PATH)}}, base_dir=path.parent, environ={})
source, device = parsed.camera.source, parsed.camera.device
try:
    if source == "auto":  # which camera the service would pick; nothing is opened
        select_auto_camera()
    elif source == "picamera2" and not import_picamera2_class().global_camera_info():
        print("picamera2 lists no camera")
    elif source == "opencv" and device.startswith("/dev/") and not Path(device).exists():
        print(f"{device} does not exist")
except SourceError as exc:
    print(exc)
'
    as_user=
    # As the service user where there is one: the camera devices must be open to it (group video).
    if [ -z "$ROOT" ]; then as_user="runuser -u $SERVICE_USER --"; fi
    # shellcheck disable=SC2086 # $as_user is a command prefix or nothing
    errors=$(mktemp)
    if ! NO_CAMERA=$(cd / && $as_user "$ROOT$VENV/bin/python" -I -c "$probe" "$config" 2>"$errors"); then
        say "could not look for a camera: $(tail -n 1 -- "$errors")"
        NO_CAMERA=
    fi
    rm -f -- "$errors"
}

install_unit() {
    ensure_dir "$(dirname -- "$UNIT_FILE")" 755 root:root
    if cmp -s -- "$SRC_DIR/systemd/$SERVICE" "$ROOT$UNIT_FILE"; then
        ensure_mode "$UNIT_FILE" 644 root:root
    else
        install_file "$SRC_DIR/systemd/$SERVICE" "$UNIT_FILE" 644 root:root
        systemctl_do daemon-reload
    fi
}

# install_command: the link on PATH. A file or link there that is not ours (another install
# of edge-face, say with pip) is left alone, and said.
install_command() {
    if [ -e "$ROOT$COMMAND_LINK" ] || [ -L "$ROOT$COMMAND_LINK" ]; then
        if [ "$(readlink -- "$ROOT$COMMAND_LINK" 2>/dev/null || true)" != "$COMMAND" ]; then
            say "left $COMMAND_LINK alone (not made by this installer): the installed command is $COMMAND"
            return 0
        fi
    elif [ ! -d "$ROOT$(dirname -- "$COMMAND_LINK")" ]; then
        mkdir -p -- "$ROOT$(dirname -- "$COMMAND_LINK")"  # only in a bare --root
    fi
    ensure_link "$COMMAND" "$COMMAND_LINK"
}

start_service() {
    [ -n "$USE_SYSTEMCTL" ] || return 0
    if ! systemctl is-enabled --quiet "$SERVICE"; then
        systemctl enable --quiet "$SERVICE"
        changed "enabled $SERVICE"
    fi
    if [ -n "$CHANGED" ] || ! systemctl is-active --quiet "$SERVICE"; then
        if [ -n "$NO_CAMERA" ]; then
            # READY=1 needs a frame: waiting for it here would only time out.
            systemctl restart --no-block "$SERVICE"
            say "$SERVICE (re)started; it waits for the camera"
        else
            say "starting $SERVICE (it loads the model and waits for a first frame)"
            # Type=notify: this returns once the daemon has loaded the model and seen a frame.
            systemctl restart "$SERVICE" || die "$SERVICE did not start: sudo journalctl -u $SERVICE_NAME -n 50"
            say "$SERVICE (re)started"
        fi
    fi
}

do_install() {
    check_inputs
    install_os_packages
    create_user
    install_package
    install_model
    install_config
    install_unit
    install_command
    find_camera
    start_service
    if [ -n "$CHANGED" ]; then say "done"; else say "edge-face is up to date; nothing changed"; fi
    if [ -n "$NO_CAMERA" ]; then
        say "no camera found yet; the service waits for one (${NO_CAMERA#no camera found: })"
        say "connect the camera, or set [camera] in $CONFIG_FILE"
    fi
    next_steps
}

# next_steps: the last lines, commands to copy. The config is 0640 root:edge-face and the
# journal is for root and the groups adm and systemd-journal, hence sudo.
next_steps() {
    say "next:"
    cat <<END
  # check the config as the service reads it
  sudo edge-face check-config --as-user $SERVICE_USER $CONFIG_FILE
  # follow the service (the face events show here until it has a broker)
  sudo journalctl -u $SERVICE_NAME -f
  # give it a broker: [mqtt] host and username, the password alone in the second file
  sudoedit $CONFIG_FILE $CREDENTIAL_FILE
  sudo systemctl restart $SERVICE_NAME
END
}

# --- uninstall and rollback --------------------------------------------------------------------

# forget_device: with the service stopped (it would announce itself again) and the program
# still installed, remove the device's retained discovery config, state, snapshot, status and
# controls from the broker, so Home Assistant does not keep a ghost device. The environment
# is the unit's: its credential (LoadCredential=) and state directory (StateDirectory=).
forget_device() {
    program=$ROOT$COMMAND
    if [ ! -x "$program" ] || [ ! -f "$ROOT$CONFIG_FILE" ]; then
        return 0
    fi
    if CREDENTIALS_DIRECTORY=$ROOT$CONFIG_DIR STATE_DIRECTORY=$ROOT/var/lib/edge-face \
        "$program" forget --config "$ROOT$CONFIG_FILE"; then
        say "removed the device from the MQTT broker and Home Assistant"
    else
        printf '%s: warning: %s\n' "$PROG" "could not remove the device from the MQTT broker (see above): its retained topics stay there, and Home Assistant keeps the device until it is deleted there" >&2
    fi
}

do_uninstall() {
    if [ -n "$USE_SYSTEMCTL" ] && systemctl cat "$SERVICE" >/dev/null 2>&1; then
        systemctl disable --now --quiet "$SERVICE" || true
    fi
    forget_device
    if [ -e "$ROOT$UNIT_FILE" ]; then
        rm -f -- "$ROOT$UNIT_FILE"
        systemctl_do daemon-reload
        say "removed $UNIT_FILE"
    fi
    if [ "$(readlink -- "$ROOT$COMMAND_LINK" 2>/dev/null || true)" = "$COMMAND" ]; then
        rm -f -- "$ROOT$COMMAND_LINK"
        say "removed $COMMAND_LINK"
    fi
    if [ -e "$ROOT$INSTALL_DIR" ]; then
        rm -rf -- "$ROOT$INSTALL_DIR"
        say "removed $INSTALL_DIR (virtualenv and models)"
    fi
    if [ -z "$PURGE" ]; then
        [ ! -e "$ROOT$CONFIG_DIR" ] || say "kept $CONFIG_DIR (config and credential); --uninstall --purge removes it"
        return 0
    fi
    for folder in "$CONFIG_DIR" /var/lib/edge-face /var/log/edge-face; do
        if [ -e "$ROOT$folder" ]; then rm -rf -- "$ROOT$folder"; say "removed $folder"; fi
    done
    if [ -n "$MANAGE_USER" ] && getent passwd "$SERVICE_USER" >/dev/null; then
        userdel "$SERVICE_USER"
        say "removed user $SERVICE_USER"
    fi
}

do_rollback() {
    current=$(readlink -- "$ROOT$MODELS_DIR/current" 2>/dev/null || true)
    previous=$(readlink -- "$ROOT$MODELS_DIR/previous" 2>/dev/null || true)
    if [ -z "$current" ] || [ -z "$previous" ]; then
        die "no previous model under $MODELS_DIR: nothing to roll back to"
    fi
    ln -sfn -- "$previous" "$ROOT$MODELS_DIR/current"
    ln -sfn -- "$current" "$ROOT$MODELS_DIR/previous"
    say "model $previous is current again (was $current)"
    if [ -n "$USE_SYSTEMCTL" ] && systemctl is-enabled --quiet "$SERVICE"; then
        systemctl restart "$SERVICE" || die "$SERVICE did not start: journalctl -u $SERVICE -n 50"
        say "$SERVICE restarted"
    fi
}

case $ACTION in
    install) do_install ;;
    uninstall) do_uninstall ;;
    rollback) do_rollback ;;
esac
