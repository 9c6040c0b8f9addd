#!/usr/bin/env bash
# The fleet test bench: N Debian bookworm hosts booted with systemd as PID 1 (systemd-nspawn),
# each in its own network namespace with sshd, and a controller namespace that reaches them
# over a bridge. The Ansible role is applied to them over SSH exactly as to Raspberry Pis.
#
#   tools/fleet/bench.sh root                 build (once) the cached root, print its path
#   tools/fleet/bench.sh run N -- CMD ARGS... boot N hosts, run CMD in the controller
#                                             namespace, always tear everything down
#   tools/fleet/bench.sh up DIR N             boot N hosts into DIR (DIR/hosts.json describes them);
#                                             for a look by hand: no lock, no clean-up but `down`
#   tools/fleet/bench.sh down DIR             stop the hosts of DIR, delete their namespaces and files
#
# Layout of one run (TAG: a random 6 hex digits, so parallel runs never share a name):
#   netns ef-TAG-ctl   bridge br0 10.77.0.1/24; the controller: CMD, Ansible, the broker
#   netns ef-TAG-hI    eth0 10.77.0.(10+I)/24; host hI, a systemd-nspawn container
# Nothing is added to the machine's own network namespace, so a bench cannot collide with
# anything else here, and a broker listening on 10.77.0.1 is reachable from the bench only.
#
# Every host is an overlayfs over one cached root (lower, read-only) with its own upper
# folder; the overlays live in a private mount namespace held by the containers, so they
# vanish with them. Needs root.
set -euo pipefail

readonly SUITE=bookworm
readonly ARCH=amd64
# systemd as PID 1, sshd and sudo to manage it, python3 (+ apt bindings) for Ansible and the venv, mosquitto for
# the "broker on the device" case (disabled in the root; a scenario enables it on one host).
readonly DEBOOTSTRAP_INCLUDE=systemd,systemd-sysv,dbus,openssh-server,sudo,python3,python3-venv,python3-packaging,python3-apt,iproute2,ca-certificates,mosquitto,mosquitto-clients
readonly SUBNET=10.77.0
readonly CONTROLLER_IP=$SUBNET.1
readonly ADMIN_USER=admin
readonly BOOT_TIMEOUT_S=${EDGE_FACE_FLEET_BOOT_TIMEOUT:-120}
readonly STOP_TIMEOUT_S=30
# Where the container's Python finds packages installed outside any venv (Debian's
# python3.11 puts /usr/local/lib/python3.11/dist-packages on sys.path).
readonly DEVICE_SITE=/usr/local/lib/python3.11/dist-packages

PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly PROJECT_ROOT
CACHE_DIR=${EDGE_FACE_FLEET_CACHE:-${HOME:-/root}/.cache/edge-face/fleet}
HOST_PYTHON=${EDGE_FACE_HOST_PYTHON:-$PROJECT_ROOT/.venv/bin/python}

die() { echo "fleet-bench: $*" >&2; exit 2; }
note() { echo "fleet-bench: [$((SECONDS))s] $*" >&2; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

# shellcheck source=tools/root_helpers.sh disable=SC1091  # shellcheck runs without -x in the tests
. "$PROJECT_ROOT/tools/root_helpers.sh"

# ---- the cached root ----------------------------------------------------------------------

ensure_host_tools() {
    local missing=() tool
    declare -A package_of=([debootstrap]=debootstrap [systemd-nspawn]=systemd-container [ssh]=openssh-client
        [ssh-keygen]=openssh-client [ip]=iproute2 [mosquitto]=mosquitto [unshare]=util-linux)
    for tool in "${!package_of[@]}"; do
        command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
    done
    ((${#missing[@]} == 0)) && return 0
    note "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

device_requirements() {
    (cd "$PROJECT_ROOT" && "$HOST_PYTHON" -m tools.arm64.requirements pyproject.toml litert) \
        || die "cannot read the device requirements from pyproject.toml (host python: $HOST_PYTHON)"
}

# The root's name carries a hash of everything it is built from: a new package list or a
# changed dependency in pyproject.toml builds a new root; older ones are removed.
ensure_root() {
    local requirements key root tmp
    [[ -x $HOST_PYTHON ]] || die "host python $HOST_PYTHON is missing (set EDGE_FACE_HOST_PYTHON)"
    requirements=$(device_requirements)
    key=$(printf '%s\n' "$SUITE $ARCH minbase $DEBOOTSTRAP_INCLUDE $ADMIN_USER" "$requirements" | sha256sum | cut -c1-12)
    root=$CACHE_DIR/root-$SUITE-$ARCH-$key
    ROOT=$root
    [[ -f $root/.complete ]] && return 0
    mkdir -p "$CACHE_DIR"
    local stale
    for stale in "$CACHE_DIR"/root-* "$CACHE_DIR"/root.tmp.*; do
        if [[ -e $stale && $stale != "$root" ]]; then rm -rf --one-file-system -- "$stale"; fi
    done
    rm -rf --one-file-system -- "$root"
    tmp=$(mktemp -d "$CACHE_DIR/root.tmp.XXXXXX")
    local mirror
    mirror=$(debian_mirror "$SUITE")
    note "building the $SUITE $ARCH root from $mirror (first run only; minutes)"
    debootstrap --arch=$ARCH --variant=minbase --include="$DEBOOTSTRAP_INCLUDE" \
        "$SUITE" "$tmp" "$mirror" >"$CACHE_DIR/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $CACHE_DIR/debootstrap.log"
    note "installing the device dependencies into $DEVICE_SITE of the root"
    local -a requirement_list platforms=() glibc
    mapfile -t requirement_list <<<"$requirements"
    # Every manylinux tag bookworm's glibc 2.36 can run.
    for glibc in {17..36}; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done
    # The host is the same architecture and Python minor version: its pip fetches binary
    # wheels for the root; the hosts have no network, like a device behind a firewall.
    "$HOST_PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
        "${platforms[@]}" --python-version 3.11 --implementation cp \
        --target "$tmp$DEVICE_SITE" "${requirement_list[@]}" >"$CACHE_DIR/pip.log" 2>&1 \
        || { tail -n 20 "$CACHE_DIR/pip.log" >&2; die "pip install of the device dependencies failed (log: $CACHE_DIR/pip.log)"; }
    configure_root "$tmp"
    touch "$tmp/.complete"
    mv -T "$tmp" "$root"
    note "root ready: $root ($(du -sh "$root" | cut -f1))"
}

configure_root() {
    local root=$1
    # Each container gets a fresh machine id (nspawn makes a transient one for an empty file).
    : >"$root/etc/machine-id"
    # The administrator Ansible logs in as: key only (password '*' matches nothing), sudo without
    # a password, as on a freshly imaged Raspberry Pi.
    chroot "$root" useradd --create-home --shell /bin/bash --groups sudo --password '*' "$ADMIN_USER"
    echo "$ADMIN_USER ALL=(ALL) NOPASSWD: ALL" >"$root/etc/sudoers.d/$ADMIN_USER"
    chmod 0440 "$root/etc/sudoers.d/$ADMIN_USER"
    install -d -m 0700 -o 1000 -g 1000 "$root/home/$ADMIN_USER/.ssh"
    # Host keys are made per host and run; none are shared through the root.
    rm -f "$root"/etc/ssh/ssh_host_*
    cat >"$root/etc/ssh/sshd_config.d/bench.conf" <<EOF
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
HostKey /etc/ssh/ssh_host_ed25519_key
EOF
    # Off until a scenario wants a broker on the device; nothing that needs the network.
    local unit
    for unit in mosquitto.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
        chroot "$root" systemctl disable "$unit" >/dev/null 2>&1 || true
    done
    # The console getty would fight over the passive console.
    chroot "$root" systemctl mask console-getty.service getty@tty1.service >/dev/null 2>&1 || true
}

# ---- hosts ----------------------------------------------------------------------------------

# Read-only, by the pids recorded at boot: only processes this bench started are signalled.
is_our_nspawn() {  # is_our_nspawn PID MACHINE
    [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "systemd-nspawn .*--machine=$2 "
}

up() {
    local dir=$1 count=$2
    [[ $count =~ ^[1-9][0-9]?$ ]] || die "host count '$count' is not 1-99"
    [[ $(id -u) == 0 ]] || die "needs root (network namespaces, overlayfs, systemd-nspawn)"
    ensure_host_tools
    ensure_root
    mkdir -p "$dir"
    dir=$(realpath -- "$dir")
    [[ ! -e $dir/hosts.json ]] || die "$dir already holds a bench (tools/fleet/bench.sh down $dir)"
    local tag
    tag=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
    echo "$tag" >"$dir/tag"
    echo "$ROOT" >"$dir/root"
    local ctl=ef-$tag-ctl
    ip netns add "$ctl"
    echo "$ctl" >>"$dir/namespaces"
    ip -n "$ctl" link set lo up
    ip -n "$ctl" link add br0 type bridge
    ip -n "$ctl" addr add "$CONTROLLER_IP/24" dev br0
    ip -n "$ctl" link set br0 up

    mkdir -p "$dir/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "fleet-bench-$tag" -f "$dir/ssh/id_ed25519"
    : >"$dir/ssh/known_hosts"
    local i name ip ns
    for ((i = 1; i <= count; i++)); do
        name=h$i ip=$SUBNET.$((10 + i)) ns=ef-$tag-h$i
        ip netns add "$ns"
        echo "$ns" >>"$dir/namespaces"
        ip -n "$ns" link set lo up
        # Made inside the controller namespace, the host end moved straight into its own: no
        # interface ever appears in the machine's namespace.
        ip -n "$ctl" link add "v$name" type veth peer name eth0 netns "$ns"
        ip -n "$ctl" link set "v$name" master br0 up
        ip -n "$ns" addr add "$ip/24" dev eth0
        ip -n "$ns" link set eth0 up
        prepare_host "$dir" "$name" "$ip"
    done
    # Overlays and containers in a private mount namespace that the containers keep alive.
    unshare --mount --propagation private -- "$BASH" "${BASH_SOURCE[0]}" _boot "$dir" "$count"
    wait_for_ssh "$dir" "$count"
    write_inventory "$dir" "$count"
    note "$count hosts up; controller namespace $ctl"
}

# Per-host files, written into the host's upper layer before it boots.
prepare_host() {  # prepare_host DIR NAME IP
    local dir=$1 name=$2 ip=$3 host=$1/hosts/$2
    mkdir -p "$host/upper" "$host/work" "$host/merged"
    local upper=$host/upper
    install -d -m 0755 "$upper/etc" "$upper/etc/ssh"
    echo "$name" >"$upper/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n%s controller\n' "$name" "$CONTROLLER_IP" >"$upper/etc/hosts"
    ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$upper/etc/ssh/ssh_host_ed25519_key"
    echo "$ip $(cut -d' ' -f1,2 "$upper/etc/ssh/ssh_host_ed25519_key.pub")" >>"$dir/ssh/known_hosts"
    install -d -m 0755 "$upper/home" 
    install -d -m 0755 -o 1000 -g 1000 "$upper/home/$ADMIN_USER"
    install -d -m 0700 -o 1000 -g 1000 "$upper/home/$ADMIN_USER/.ssh"
    install -m 0600 -o 1000 -g 1000 "$dir/ssh/id_ed25519.pub" "$upper/home/$ADMIN_USER/.ssh/authorized_keys"
    # apt's lists are as old as the cached root; the hosts have no network, so the role's
    # `apt update_cache` must find them fresh (the packages it wants are in the root).
    install -d -m 0755 "$upper/var" "$upper/var/lib" "$upper/var/lib/apt" "$upper/var/lib/apt/periodic"
    touch "$upper/var/lib/apt/periodic/update-success-stamp"
    # The camera: a replay of real photos (EDGE_FACE_FLEET_CAMERA, a folder of .jpg).
    if [[ -n ${EDGE_FACE_FLEET_CAMERA:-} ]]; then
        install -d -m 0755 "$upper/srv" "$upper/srv/camera"
        find "$EDGE_FACE_FLEET_CAMERA" -maxdepth 1 -name '*.jpg' -exec install -m 0644 -t "$upper/srv/camera" {} +
    fi
}

# Runs inside the private mount namespace.
boot() {  # boot DIR COUNT
    local dir=$1 count=$2 root tag i name host
    root=$(cat "$dir/root")
    tag=$(cat "$dir/tag")
    for ((i = 1; i <= count; i++)); do
        name=h$i host=$dir/hosts/$name
        mount -t overlay overlay -o "lowerdir=$root,upperdir=$host/upper,workdir=$host/work" "$host/merged"
        # setsid: the container outlives this script; its pid is recorded for `down`.
        setsid systemd-nspawn -D "$host/merged" -b --register=no --keep-unit --console=passive \
            --machine="ef-$tag-$name" --network-namespace-path="/run/netns/ef-$tag-$name" \
            </dev/null >"$host/console.log" 2>&1 &
        echo "$! ef-$tag-$name" >>"$dir/pids"
    done
}

ssh_to() {  # ssh_to DIR IP COMMAND...
    local dir=$1 ip=$2
    shift 2
    ip netns exec "ef-$(cat "$dir/tag")-ctl" ssh -F /dev/null -i "$dir/ssh/id_ed25519" \
        -o UserKnownHostsFile="$dir/ssh/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes \
        -o ConnectTimeout=3 "$ADMIN_USER@$ip" "$@"
}

# The container's PID 1 (systemd), for nsenter: the child of the recorded nspawn process.
container_init() {  # container_init DIR NAME
    local pid machine
    while read -r pid machine; do
        if [[ $machine == *-$2 ]] && is_our_nspawn "$pid" "$machine"; then pgrep -P "$pid" | head -n 1; fi
    done <"$1/pids"
}

# What the host's own journal says about sshd, when SSH does not get in.
ssh_journal() {  # ssh_journal DIR NAME
    local init
    init=$(container_init "$1" "$2")
    [[ -n $init ]] || { echo "(no running container)"; return 0; }
    nsenter -t "$init" -a journalctl -b --no-pager -n 25 -u ssh.service -u systemd-user-sessions.service 2>&1 | grep -v "Access denied" || true
    nsenter -t "$init" -a systemctl --failed --no-legend 2>&1 || true
}

# systemd in nspawn on this cgroup v1 host now and then fails to move a freshly spawned unit
# process into its cgroup (exit status 219/CGROUP, about one unit in a few thousand). At boot
# that can hit systemd-user-sessions, whose /run/nologin then keeps SSH out: such units are
# started again, once, and said so.
heal_cgroup_races() {  # heal_cgroup_races DIR NAME
    local init unit
    init=$(container_init "$1" "$2")
    [[ -n $init ]] || return 0
    for unit in $(nsenter -t "$init" -a systemctl --failed --no-legend --plain 2>/dev/null | awk '{print $1}'); do
        if [[ $(nsenter -t "$init" -a systemctl show -P ExecMainStatus "$unit" 2>/dev/null) == 219 ]]; then
            note "$2: $unit failed at boot with 219/CGROUP (a cgroup v1 + nspawn race); starting it again"
            nsenter -t "$init" -a systemctl restart "$unit" || true
        fi
    done
}

wait_for_ssh() {  # wait_for_ssh DIR COUNT
    local dir=$1 count=$2 i ip deadline=$((SECONDS + BOOT_TIMEOUT_S)) pid machine tries
    for ((i = 1; i <= count; i++)); do
        ip=$SUBNET.$((10 + i)) tries=0
        until ssh_to "$dir" "$ip" 'systemctl is-system-running --wait >/dev/null 2>&1; true' 2>/dev/null; do
            if ((++tries == 5)); then heal_cgroup_races "$dir" "h$i"; fi
            while read -r pid machine; do
                is_our_nspawn "$pid" "$machine" \
                    || die "host $machine stopped while booting; its console: $(tail -n 20 "$dir/hosts/${machine##*-}/console.log")"
            done <"$dir/pids"
            ((SECONDS < deadline)) || die "h$i ($ip) not reachable over SSH within ${BOOT_TIMEOUT_S}s" \
                "($(ssh_to "$dir" "$ip" true 2>&1 | tail -n 1)); its console: $(tail -n 30 "$dir/hosts/h$i/console.log")" \
                "; its journal: $(ssh_journal "$dir" "h$i")"
            sleep 1
        done
    done
}

write_inventory() {  # write_inventory DIR COUNT
    local dir=$1 count=$2 tag i
    tag=$(cat "$dir/tag")
    {
        printf '{"controller_namespace": "ef-%s-ctl", "controller_ip": "%s", "user": "%s",\n' "$tag" "$CONTROLLER_IP" "$ADMIN_USER"
        printf ' "ssh_key": "%s", "known_hosts": "%s", "root": "%s",\n' "$dir/ssh/id_ed25519" "$dir/ssh/known_hosts" "$(cat "$dir/root")"
        printf ' "hosts": {'
        for ((i = 1; i <= count; i++)); do
            ((i > 1)) && printf ', '
            printf '"h%d": {"ip": "%s", "machine": "ef-%s-h%d"}' "$i" "$SUBNET.$((10 + i))" "$tag" "$i"
        done
        printf '}}\n'
    } >"$dir/hosts.json.tmp"
    mv "$dir/hosts.json.tmp" "$dir/hosts.json"
}

down() {  # down DIR
    local dir=$1 pid machine ns deadline host
    [[ -d $dir ]] || return 0
    # The consoles (boot and shutdown messages) of the last bench stay for a look afterwards.
    rm -rf "$CACHE_DIR/last-consoles"
    mkdir -p "$CACHE_DIR/last-consoles"
    if [[ -f $dir/pids ]]; then
        # SIGTERM makes nspawn power the container off cleanly (SIGRTMIN+3 to its systemd).
        while read -r pid machine; do
            if is_our_nspawn "$pid" "$machine"; then kill -TERM "$pid" 2>/dev/null || true; fi
        done <"$dir/pids"
        deadline=$((SECONDS + STOP_TIMEOUT_S))
        while read -r pid machine; do
            while is_our_nspawn "$pid" "$machine" && ((SECONDS < deadline)); do sleep 0.5; done
            if is_our_nspawn "$pid" "$machine"; then
                note "$machine did not power off within ${STOP_TIMEOUT_S}s: killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done <"$dir/pids"
    fi
    for host in "$dir"/hosts/*/; do
        if [[ -f $host/console.log ]]; then cp "$host/console.log" "$CACHE_DIR/last-consoles/$(basename "$host").log"; fi
    done
    if [[ -f $dir/namespaces ]]; then
        while read -r ns; do ip netns del "$ns" 2>/dev/null || true; done <"$dir/namespaces"
    fi
    # The overlays died with the containers' mount namespace; nothing can be mounted below.
    if findmnt -rn -o TARGET | grep -q -F -- "$dir/"; then die "refusing to delete $dir: something is mounted below it"; fi
    rm -rf --one-file-system -- "$dir"
}

# ---- run ------------------------------------------------------------------------------------

RUN_DIR=
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    local status=$?
    if [[ -n $RUN_DIR ]]; then
        note "tearing down"
        down "$RUN_DIR" || status=1
    fi
    exit "$status"
}

run() {  # run N -- CMD...
    local count=$1
    shift
    [[ ${1:-} == -- ]] || die "usage: run N -- COMMAND..."
    shift
    (($#)) || die "run: no command given"
    mkdir -p "$CACHE_DIR/runs"
    exec 9>"$CACHE_DIR/.lock"
    flock -w 3600 9 || die "another fleet bench holds $CACHE_DIR/.lock"
    # Under the lock, anything left in runs/ belongs to a bench that was killed: remove it.
    local stale
    for stale in "$CACHE_DIR"/runs/*; do
        if [[ -d $stale ]]; then note "removing the leftover bench $stale"; down "$stale"; fi
    done
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    RUN_DIR=$(mktemp -d "$CACHE_DIR/runs/XXXXXX")
    local started=$SECONDS
    up "$RUN_DIR" "$count"
    note "bench up in $((SECONDS - started))s"
    local status=0 report=$CACHE_DIR/last-run.txt
    rm -f "$report"
    EDGE_FACE_FLEET_DIR=$RUN_DIR EDGE_FACE_FLEET_REPORT=$report ip netns exec "ef-$(cat "$RUN_DIR/tag")-ctl" "$@" \
        || status=$?
    note "command exited with $status after $((SECONDS - started))s"
    if [[ -s $report ]]; then note "playbook runs (from $report):"; sed 's/^/    /' "$report" >&2; fi
    return "$status"
}

main() {
    local command=${1:-}
    (($#)) && shift
    case $command in
        root) [[ $(id -u) == 0 ]] || die "needs root"; ensure_host_tools; ensure_root; echo "$ROOT" ;;
        up)
            (($# == 2)) || die "usage: up DIR N"
            # A bench that did not come up completely is taken down again.
            trap 'status=$?; if ((status != 0)) && [[ -e $1/tag && ! -e $1/hosts.json ]]; then down "$1"; fi; exit "$status"' EXIT
            up "$1" "$2" ;;
        _boot) boot "$@" ;;
        down) (($# == 1)) || die "usage: down DIR"; down "$1" ;;
        run) (($# >= 3)) || die "usage: run N -- COMMAND..."; run "$@" ;;
        -h | --help | help) usage ;;
        *) die "unknown command '$command' (see --help)" ;;
    esac
}

main "$@"
