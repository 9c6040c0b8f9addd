"""The fleet bench: the Ansible role rolled out over SSH to Debian hosts booted with systemd.

Runs inside ``tools/fleet/bench.sh run 6 -- ...`` (``make fleet-check``), which boots the
hosts and runs this module in the controller's network namespace; elsewhere it is skipped.
The scenarios build on each other, in file order (run with -x):

  h1-h5  the fleet; a mosquitto on the controller (10.77.0.1), i.e. "a broker elsewhere"
  h6     a mosquitto on the device itself, [mqtt] host = "localhost"

Everything is asserted from the hosts (over SSH: links, unit state, systemd's monotonic
timestamps, which share the kernel's clock with this process) and from the broker (a
recorder subscribed to every status topic, and `edge-face fleet`), never from Ansible's
word alone.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from broker import MosquittoBroker
from deploy_support import VENV_BIN, ansible_env, sha256
from paho.mqtt.enums import CallbackAPIVersion

from edge.detect.sidecar import canonical_digest

BENCH_DIR = os.environ.get("EDGE_FACE_FLEET_DIR")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not BENCH_DIR, reason="needs the booted hosts: make fleet-check (tools/fleet/bench.sh run 6 -- pytest ...)"
    ),
]

FLEET = ["h1", "h2", "h3", "h4", "h5"]
LOCAL_BROKER_HOST = "h6"
BATCHES = [["h1"], ["h2", "h3"], ["h4", "h5"]]  # serial [1, 2] over five hosts
BROKER_PORT = 1883
DEVICE_PASSWORD = "device pw with 'quotes' and \"more\""
WATCHER_PASSWORD = "watcher-secret"
RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
HANDLER_HOSTS = re.compile(
    r"RUNNING HANDLER \[edge_face : Restart edge-face\][^\n]*\n((?:(?:ok|changed|fatal|failed): \[[^\]]+\][^\n]*\n)+)"
)
TIMES: list[tuple[str, float]] = []
# What each scenario observed, for the bench's report (EDGE_FACE_FLEET_REPORT).
OBSERVED: list[str] = []


# --- the bench ---------------------------------------------------------------------------------


@dataclass
class Bench:
    info: dict
    workdir: Path

    def ip(self, host: str) -> str:
        return self.info["hosts"][host]["ip"]

    def ssh(self, host: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                self.info["ssh_key"],
                "-o",
                f"UserKnownHostsFile={self.info['known_hosts']}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                f"{self.info['user']}@{self.ip(host)}",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, f"{host}: {command}: {result.stderr}"
        return result

    def current_release(self, host: str) -> str:
        return self.releases(host)[0]

    def releases(self, host: str) -> tuple[str, str | None]:
        out = self.ssh(
            host, "readlink /opt/edge-face/models/current; readlink /opt/edge-face/models/previous || true"
        ).stdout.split()
        return out[0], (out[1] if len(out) > 1 else None)

    def unit(self, host: str) -> dict[str, str]:
        """ActiveState and the CLOCK_MONOTONIC times (µs) the service last became active / inactive."""
        out = self.ssh(
            host,
            "systemctl show edge-face.service -p ActiveState -p ActiveEnterTimestampMonotonic "
            "-p InactiveEnterTimestampMonotonic -p NRestarts",
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def break_service(self, host: str) -> None:
        """The service cannot start any more: a drop-in whose ExecStartPre fails."""
        self.ssh(
            host,
            "sudo mkdir -p /etc/systemd/system/edge-face.service.d && printf '[Service]\\nExecStartPre=/bin/false\\n' "
            "| sudo tee /etc/systemd/system/edge-face.service.d/bench-broken.conf >/dev/null && sudo systemctl daemon-reload",
        )

    def repair_service(self, host: str) -> None:
        self.ssh(
            host,
            "sudo rm -f /etc/systemd/system/edge-face.service.d/bench-broken.conf && sudo systemctl daemon-reload "
            "&& sudo systemctl reset-failed edge-face.service",
        )


@dataclass(frozen=True)
class Model:
    path: Path
    model_id: str

    @property
    def release(self) -> str:
        return sha256(self.path)[:16]


def model_variant(source: Path, folder: Path, suffix: str, padding: bytes) -> Model:
    """Another release of the real model: different bytes (padding after the flatbuffer, which
    the interpreter ignores), a sidecar with their sha256 and its own model id."""
    folder.mkdir(parents=True)
    model = folder / source.name
    model.write_bytes(source.read_bytes() + padding)
    sidecar = json.loads(source.with_suffix(".json").read_text())
    sidecar["tflite_sha256"] = sha256(model)
    sidecar["model_id"] = f"{sidecar['model_id']}-{suffix}"
    sidecar["sidecar_sha256"] = canonical_digest(sidecar)
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    return Model(model, sidecar["model_id"])


class StatusRecorder:
    """Every message on the devices' status topics, with the CLOCK_MONOTONIC time it arrived."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.messages: list[tuple[float, str, str]] = []
        self._cond = threading.Condition()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.username_pw_set("watcher", WATCHER_PASSWORD)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("edge-face/+/status", qos=1)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            if not message.retain:  # retained copies replay the past; only live changes count
                self.messages.append((time.monotonic(), message.topic.split("/")[1], message.payload.decode()))
            self._cond.notify_all()

    def events(self, host: str) -> list[tuple[float, str]]:
        with self._cond:
            return [(t, payload) for t, device, payload in self.messages if device == host]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Run:
    result: subprocess.CompletedProcess
    recap: dict[str, tuple[int, int, int, int]]
    seconds: float
    restart_batches: list[list[str]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return self.result.stdout[-8000:] + self.result.stderr[-3000:]


class Fleet:
    """ansible-playbook site.yml against the bench hosts, the real way: SSH, sudo, serial."""

    def __init__(self, bench: Bench, project: Path, base_model: Model, broker: MosquittoBroker) -> None:
        self.bench, self.project, self.broker = bench, project, broker
        workdir = bench.workdir
        ssh_args = (
            f"-o UserKnownHostsFile={bench.info['known_hosts']} -o StrictHostKeyChecking=yes "
            "-o ControlMaster=auto -o ControlPersist=120s"
        )
        common = {
            "ansible_user": bench.info["user"],
            "ansible_ssh_private_key_file": bench.info["ssh_key"],
            "ansible_ssh_common_args": ssh_args,
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        hosts = {name: {"ansible_host": bench.ip(name)} for name in FLEET}
        self.inventory = workdir / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump({"edge_face": {"hosts": hosts, "vars": common}}))
        self.local_inventory = workdir / "inventory-local.yml"
        self.local_inventory.write_text(
            yaml.safe_dump(
                {
                    "edge_face": {
                        "hosts": {LOCAL_BROKER_HOST: {"ansible_host": bench.ip(LOCAL_BROKER_HOST)}},
                        "vars": common,
                    }
                }
            )
        )
        device_tables = {
            "edge_face_camera": {"source": "replay", "path": "/srv/camera", "loop": True, "fps": 1.0},
            "edge_face_detector": {"num_threads": 1},
            "edge_face_events": {"debounce_frames": 1, "clear_after_seconds": 2.0},
            "edge_face_stats": {"interval_seconds": 2.0},
        }
        self.variables = {
            **device_tables,
            "edge_face_project_dir": str(project),
            "edge_face_wheel_dir": str(workdir / "dist"),
            "edge_face_build_model": False,
            "edge_face_model_src": str(base_model.path),
            "edge_face_mqtt": {
                "host": broker.host,
                "port": broker.port,
                "username": "device",
                "keepalive": 10,
                "reconnect_min_delay": 0.5,
                "reconnect_max_delay": 5,
            },
            "edge_face_mqtt_password": DEVICE_PASSWORD,
            "edge_face_wait_online_timeout": 60,
            "edge_face_serial": [1, 2],
        }
        self.vars_file = workdir / "vars.yml"
        self.vars_file.write_text(yaml.safe_dump(self.variables))
        self.local_vars_file = workdir / "vars-local.yml"
        self.local_vars_file.write_text(
            yaml.safe_dump(
                {
                    **self.variables,
                    "edge_face_mqtt": {"host": "localhost", "port": 1883},
                    "edge_face_mqtt_password": "",
                }
            )
        )

    def play(self, label: str, *args: str, local: bool = False, expect_failure: bool = False) -> Run:
        env = ansible_env(self.bench.workdir, ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.bench.workdir / "cp"))
        inventory, variables = (
            (self.local_inventory, self.local_vars_file) if local else (self.inventory, self.vars_file)
        )
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "site.yml", "-e", f"@{variables}", *args],
            cwd=self.project / "ansible",
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        seconds = time.monotonic() - started
        TIMES.append((label, seconds))
        recap = {m.group(1): tuple(map(int, m.groups()[1:])) for m in RECAP.finditer(result.stdout)}
        # Hosts of one batch run in parallel: their order within it is arbitrary.
        batches = [sorted(re.findall(r"\[([^\]]+)\]", block)) for block in HANDLER_HOSTS.findall(result.stdout)]
        run = Run(result, recap, seconds, batches)
        if expect_failure:
            assert result.returncode != 0, run.output
        else:
            assert result.returncode == 0 and recap, run.output + self.journals(h for h, r in recap.items() if r[3])
        assert DEVICE_PASSWORD not in result.stdout + result.stderr
        return run

    def journals(self, hosts) -> str:
        """The service's last journal lines on each of ``hosts``: why a start failed."""
        return "".join(
            f"\n--- {host}:\n"
            + self.bench.ssh(host, "sudo journalctl -u edge-face -n 15 --no-pager", check=False).stdout
            for host in hosts
        )

    def fleet_status(self, *args: str) -> tuple[int, dict[str, dict]]:
        """`edge-face fleet --json` as an operator runs it: (exit code, reports by device)."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge.cli",
                "fleet",
                "--broker",
                self.broker.host,
                "--port",
                str(self.broker.port),
                "--username",
                "watcher",
                "--json",
                "--timeout",
                "8",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.project,
            env={**os.environ, "EDGE_FACE_MQTT_PASSWORD": WATCHER_PASSWORD},
        )
        assert result.returncode in (0, 1, 5), result.stderr
        return result.returncode, {d["device"]: d for d in map(json.loads, result.stdout.splitlines())}


def snapshot_project(project_root: Path, destination: Path) -> Path:
    """What the controller deploys, frozen: the role, the package sources and the tools."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ("edge", "tools", "ansible"):
        shutil.copytree(project_root / name, destination / name, ignore=ignore)
    for path in project_root.iterdir():
        if path.is_file() and (path.suffix in (".toml", ".md", ".in", ".cfg") or path.name.startswith("LICENSE")):
            shutil.copy2(path, destination / path.name)
    return destination


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Bench:
    info = json.loads((Path(BENCH_DIR) / "hosts.json").read_text())
    assert set([*FLEET, LOCAL_BROKER_HOST]) <= set(info["hosts"]), "the bench must boot six hosts"
    return Bench(info, tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def broker(bench):
    users = {"device": DEVICE_PASSWORD, "watcher": WATCHER_PASSWORD}
    with MosquittoBroker(
        bench.workdir / "broker", users=users, host=bench.info["controller_ip"], port=BROKER_PORT
    ) as running:
        yield running


@pytest.fixture(scope="module")
def models(int8_model_path, bench) -> dict[str, Model]:
    base = Model(int8_model_path, json.loads(int8_model_path.with_suffix(".json").read_text())["model_id"])
    return {
        "m1": base,
        "m2": model_variant(int8_model_path, bench.workdir / "m2", "r2", b"\0" * 16),
        "m3": model_variant(int8_model_path, bench.workdir / "m3", "r3", b"\0" * 32),
    }


@pytest.fixture(scope="module")
def fleet(bench, broker, models, project_root) -> Fleet:
    return Fleet(bench, snapshot_project(project_root, bench.workdir / "project"), models["m1"], broker)


@pytest.fixture(scope="module", autouse=True)
def report_times():
    yield
    lines = [f"{label}: {seconds:.0f} s" for label, seconds in TIMES] + ["observed:"] + OBSERVED
    path = os.environ.get("EDGE_FACE_FLEET_REPORT")
    if path:
        Path(path).write_text("\n".join(lines) + "\n")


def wait_fleet(fleet: Fleet, want: dict[str, tuple[str, str | None]], timeout: float = 90) -> dict[str, dict]:
    """Poll `edge-face fleet` until each host has (status, model id or None for any)."""
    deadline = time.monotonic() + timeout
    while True:
        _, reports = fleet.fleet_status()
        seen = {h: (reports.get(h, {}).get("status"), reports.get(h, {}).get("model")) for h in want}
        if all(seen[h][0] == s and (m is None or seen[h][1] == m) for h, (s, m) in want.items()):
            return reports
        if time.monotonic() > deadline:
            raise AssertionError(f"fleet never reached {want}; it shows {seen}")
        time.sleep(2)


# --- scenarios ---------------------------------------------------------------------------------


def test_provision_every_host_from_scratch(bench, fleet, models):
    for host in FLEET:  # nothing of edge-face on a fresh host
        assert (
            bench.ssh(host, "test -e /opt/edge-face || test -e /etc/edge-face || id edge-face", check=False).returncode
            != 0
        )
    run = fleet.play("provision 5 hosts")
    assert all(run.recap[h][1] > 0 and run.recap[h][3] == 0 for h in FLEET), run.recap
    OBSERVED.append(f"provision: recap {run.recap}; restart batches {run.restart_batches}")
    assert run.restart_batches == BATCHES, run.output
    for host in FLEET:
        assert bench.unit(host)["ActiveState"] == "active"
        assert bench.current_release(host) == models["m1"].release
        assert bench.ssh(host, "stat -c '%U %a' /etc/edge-face/mqtt_password; id -nG edge-face").stdout.split() == [
            "root",
            "600",
            "edge-face",
            "video",
        ]
    code, reports = fleet.fleet_status()
    assert code == 0 and sorted(reports) == FLEET
    assert {r["model"] for r in reports.values()} == {models["m1"].model_id}
    assert all(r["fps"] and r["fps"] > 0 and r["inference_ms"] > 0 for r in reports.values()), reports
    OBSERVED.append(
        "provision, edge-face fleet: "
        + "; ".join(
            f"{h} {r['status']} {r['version']} {r['model']} {r['fps']} fps {r['inference_ms']} ms"
            for h, r in sorted(reports.items())
        )
    )


def test_second_run_changes_nothing_anywhere(bench, fleet):
    before = {h: bench.unit(h)["ActiveEnterTimestampMonotonic"] for h in FLEET}
    run = fleet.play("second run (changed=0)")
    assert {h: run.recap[h][1] for h in FLEET} == dict.fromkeys(FLEET, 0), run.recap
    OBSERVED.append(f"second run: recap {run.recap}")
    assert run.restart_batches == []
    assert {h: bench.unit(h)["ActiveEnterTimestampMonotonic"] for h in FLEET} == before, "a service was restarted"


# The hosts replay the upstream photos (most 1024x768, up to 1600x898, a dozen sizes) at 1 fps
# over MQTT, without OpenCV (the numpy resize): the daemon's resident memory must stay within
# the bound tools/bench_daemon.py holds frames over 640x480 and mixed-size replays to.
PEAK_RSS_BOUND_MB = 100.0


def daemon_memory(bench: Bench, host: str) -> dict[str, float]:
    """VmRSS, VmHWM (peak) and RssAnon of the host's running daemon, in MB (MiB)."""
    out = bench.ssh(
        host,
        'pid=$(systemctl show -p MainPID --value edge-face.service) && test "$pid" -gt 0 '
        "&& sudo grep -E '^(VmRSS|VmHWM|RssAnon):' /proc/$pid/status",
    ).stdout
    return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in out.splitlines()}


def test_every_daemon_stays_within_its_memory_bound_over_the_photo_replay(bench, fleet):
    # Two passes over the replayed photos, every size seen at least twice: a per-size cache
    # that is never dropped (as the resize plans were: 176-186 MB here) shows by then.
    photos = int(bench.ssh(FLEET[0], "ls /srv/camera/*.jpg | wc -l").stdout)
    needed_s = 2 * photos / fleet.variables["edge_face_camera"]["fps"] + 5
    for host in FLEET:
        active_since = int(bench.unit(host)["ActiveEnterTimestampMonotonic"]) / 1e6
        time.sleep(max(0.0, active_since + needed_s - time.monotonic()))
    memory = {host: daemon_memory(bench, host) for host in FLEET}
    OBSERVED.append(
        f"daemon memory after two passes over {photos} photos (MB): "
        + "; ".join(
            f"{h} VmRSS {m['VmRSS']:.1f}, VmHWM {m['VmHWM']:.1f}, RssAnon {m['RssAnon']:.1f}"
            for h, m in sorted(memory.items())
        )
    )
    print(OBSERVED[-1])
    for host, figures in memory.items():
        assert figures["VmHWM"] < PEAK_RSS_BOUND_MB, (host, figures)


def test_rolling_update_goes_canary_first_then_batches_each_back_online(bench, fleet, broker, models):
    recorder = StatusRecorder(broker)
    try:
        run = fleet.play("rolling update to a new model", "-e", f"edge_face_model_src={models['m2'].path}")
    finally:
        recorder.close()
    assert run.restart_batches == BATCHES, run.output
    units = {h: bench.unit(h) for h in FLEET}
    # The broker saw each restart as "stopped" then "online"; the next batch's first "stopped"
    # comes only after every host of the batch before is back "online".
    went_down, back_online = {}, {}
    for host in FLEET:
        events = recorder.events(host)
        assert [payload for _, payload in events] == ["stopped", "online"], (host, events)
        went_down[host], back_online[host] = events[0][0], events[1][0]
    for earlier, later in itertools.pairwise(BATCHES):
        assert max(back_online[h] for h in earlier) < min(went_down[h] for h in later), (went_down, back_online)
        # The hosts agree: systemd's own (same-clock) times of becoming active and inactive.
        assert max(int(units[h]["ActiveEnterTimestampMonotonic"]) for h in earlier) < min(
            int(units[h]["InactiveEnterTimestampMonotonic"]) for h in later
        )
    for host in FLEET:
        assert bench.releases(host) == (models["m2"].release, models["m1"].release)
    wait_fleet(fleet, {h: ("online", models["m2"].model_id) for h in FLEET})
    start = min(went_down.values())
    OBSERVED.append(
        "rolling update, broker times from the canary's stop: "
        + "; ".join(f"{h} stopped +{went_down[h] - start:.1f} s, online +{back_online[h] - start:.1f} s" for h in FLEET)
    )


def test_failing_canary_stops_the_rollout_and_the_fleet_stays_on_the_old_version(bench, fleet, broker, models):
    bench.break_service("h1")
    before = {h: bench.unit(h)["ActiveEnterTimestampMonotonic"] for h in FLEET[1:]}
    recorder = StatusRecorder(broker)
    try:
        run = fleet.play("failing canary", "-e", f"edge_face_model_src={models['m3'].path}", expect_failure=True)
    finally:
        recorder.close()
    assert run.recap["h1"][3] == 1, run.recap  # the canary failed
    assert all(run.recap.get(h, (0, 0, 0, 0))[1] == 0 for h in FLEET[1:]), run.recap
    assert bench.unit("h1")["ActiveState"] != "active"
    for host in FLEET[1:]:  # untouched: old model, same process, never stopped
        assert bench.releases(host) == (models["m2"].release, models["m1"].release)
        assert bench.unit(host)["ActiveEnterTimestampMonotonic"] == before[host]
        assert recorder.events(host) == []
    code, reports = fleet.fleet_status()
    assert code == 5 and reports["h1"]["status"] == "stopped"
    assert all(reports[h]["status"] == "online" and reports[h]["model"] == models["m2"].model_id for h in FLEET[1:])
    OBSERVED.append(
        f"failing canary: recap {run.recap}; edge-face fleet exit {code}: "
        + ", ".join(f"{h} {r['status']} {r['model']}" for h, r in sorted(reports.items()))
    )


def test_failure_in_a_batch_stops_the_rollout_per_max_fail_percentage(bench, fleet, models):
    bench.repair_service("h1")
    bench.break_service("h3")
    # 10% (the default): one failure in the batch [h2, h3] is 50% and stops before [h4, h5].
    run = fleet.play(
        "batch failure, max_fail_percentage 10", "-e", f"edge_face_model_src={models['m3'].path}", expect_failure=True
    )
    assert run.recap["h3"][3] == 1 and run.recap["h1"][3] == 0 and run.recap["h2"][3] == 0, run.recap
    OBSERVED.append(f"batch failure at 10%: recap {run.recap}")
    assert bench.releases("h1")[0] == bench.releases("h2")[0] == models["m3"].release
    for host in ("h4", "h5"):
        assert bench.releases(host)[0] == models["m2"].release and bench.unit(host)["ActiveState"] == "active"
    wait_fleet(
        fleet,
        {
            "h1": ("online", models["m3"].model_id),
            "h2": ("online", models["m3"].model_id),
            "h3": ("stopped", None),
            "h4": ("online", models["m2"].model_id),
            "h5": ("online", models["m2"].model_id),
        },
    )

    # 50%: one failure in a batch of two is not more than half; the rollout goes on.
    run = fleet.play(
        "batch failure, max_fail_percentage 50",
        "-e",
        f"edge_face_model_src={models['m3'].path}",
        "-e",
        "edge_face_max_fail_percentage=50",
        expect_failure=True,
    )
    assert run.recap["h3"][3] == 1 and run.recap["h4"][3] == 0 and run.recap["h5"][3] == 0, run.recap
    OBSERVED.append(f"batch failure at 50%: recap {run.recap}")
    for host in ("h4", "h5"):
        assert bench.releases(host) == (models["m3"].release, models["m2"].release)
    wait_fleet(fleet, {h: ("online", models["m3"].model_id) for h in ("h1", "h2", "h4", "h5")})

    bench.repair_service("h3")
    run = fleet.play("repaired host rejoins", "-e", f"edge_face_model_src={models['m3'].path}")
    assert run.recap["h3"][3] == 0 and bench.unit("h3")["ActiveState"] == "active"
    wait_fleet(fleet, {h: ("online", models["m3"].model_id) for h in FLEET})


def test_rollback_returns_every_host_to_the_previous_model(bench, fleet, models):
    run = fleet.play("rollback", "--tags", "edge_face_model", "-e", "edge_face_model_rollback=true")
    assert run.restart_batches == BATCHES, run.output
    for host in FLEET:
        assert bench.releases(host) == (models["m2"].release, models["m3"].release)
    wait_fleet(fleet, {h: ("online", models["m2"].model_id) for h in FLEET})


def test_state_absent_removes_a_host_and_its_retained_topics(bench, fleet, broker, project_root):
    if not (project_root / "edge" / "ops" / "forget.py").exists():
        pytest.skip("edge-face forget (the Home Assistant work) is not in this tree yet: the role calls it")
    run = fleet.play("state absent on h5", "--limit", "h5", "-e", "edge_face_state=absent")
    assert run.recap["h5"][1] > 0
    leftovers = bench.ssh(
        "h5",
        "ls -d /opt/edge-face /etc/edge-face /var/lib/edge-face /var/log/edge-face "
        "/etc/systemd/system/edge-face.service 2>/dev/null; id edge-face 2>/dev/null; "
        "systemctl list-unit-files edge-face.service --no-legend",
        check=False,
    ).stdout
    assert leftovers.strip() == ""
    # Nothing retained is left under the device's topics or its Home Assistant entry.
    retained = subprocess.run(
        [
            "mosquitto_sub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-u",
            "watcher",
            "-P",
            WATCHER_PASSWORD,
            "-t",
            "edge-face/h5/#",
            "-t",
            "homeassistant/device/h5/#",
            "--retained-only",
            "-v",
            "-W",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert retained.stdout.strip() == "", retained.stdout
    code, reports = fleet.fleet_status()
    assert code == 0 and sorted(reports) == FLEET[:4]
    again = fleet.play("state absent again (changed=0)", "--limit", "h5", "-e", "edge_face_state=absent")
    assert again.recap["h5"][1] == 0, again.recap


def test_online_check_reaches_a_broker_on_the_device(bench, fleet):
    host = LOCAL_BROKER_HOST
    # Debian's mosquitto listens on the device's loopback only: the controller cannot see it.
    bench.ssh(host, "sudo systemctl enable --now mosquitto.service")
    probe = subprocess.run(
        ["mosquitto_sub", "-h", bench.ip(host), "-p", "1883", "-t", "x", "-W", "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert probe.returncode != 0 and "Connection refused" in probe.stderr, probe
    run = fleet.play("provision with a broker on the device", local=True)
    assert task_result(run, "Wait for the retained online status on the device's own broker") == [f"ok: [{host}]"]
    # The controller-side check skipped this host: its broker is not the controller's localhost.
    assert task_result(run, "Wait for the retained online status") == [f"skipping: [{host}]"]
    status = bench.ssh(host, "mosquitto_sub -h localhost -t edge-face/h6/status -C 1 -W 5").stdout.strip()
    assert status == "online"
    # What the check did before: asked from the controller, "localhost" is the controller itself,
    # where no broker runs, so a healthy device failed its rollout.
    wrong = fleet.play(
        "the same check from the controller (the old way)",
        "--tags",
        "edge_face_config",
        "-e",
        "edge_face__broker_on_device=false",
        "-e",
        "edge_face_wait_online_timeout=5",
        local=True,
        expect_failure=True,
    )
    assert "edge-face fleet: broker localhost:1883 unreachable" in wrong.result.stdout, wrong.output
    assert bench.unit(host)["ActiveState"] == "active"


def task_result(run: Run, task: str) -> list[str]:
    """The per-host result lines Ansible printed under one task of the role."""
    match = re.search(rf"^TASK \[edge_face : {re.escape(task)}\] \**\n(.*?)(?:\n\n|\Z)", run.result.stdout, re.M | re.S)
    assert match, f"no task '{task}' in the output:\n{run.output}"
    return match.group(1).splitlines()
