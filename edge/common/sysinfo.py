"""Facts about the host for the diagnostics: the CPU temperature, where the kernel exposes it,
and the process's open file descriptors."""

from __future__ import annotations

from pathlib import Path

THERMAL_ROOT = Path("/sys/class/thermal")
OWN_FDS = Path("/proc/self/fd")
# Zone types that measure the CPU: the Raspberry Pi's, then common x86 and ARM ones.
_CPU_ZONE_TYPES = ("cpu-thermal", "cpu_thermal", "x86_pkg_temp", "soc_thermal", "cpu0-thermal")


def read_cpu_temperature(root: Path = THERMAL_ROOT) -> float | None:
    """The CPU temperature in °C (0.1 resolution) from ``root/thermal_zone*/temp``
    (millidegrees), preferring a zone whose ``type`` names the CPU, else the first readable
    zone; None where none is readable (containers, most VMs)."""
    zones = sorted(root.glob("thermal_zone*"), key=lambda zone: (_rank(zone), zone.name))
    for zone in zones:
        try:
            millidegrees = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        return round(millidegrees / 1000.0, 1)
    return None


def _rank(zone: Path) -> int:
    try:
        kind = (zone / "type").read_text().strip()
    except OSError:
        return len(_CPU_ZONE_TYPES)
    return _CPU_ZONE_TYPES.index(kind) if kind in _CPU_ZONE_TYPES else len(_CPU_ZONE_TYPES)


def count_open_fds(fd_dir: Path = OWN_FDS) -> int | None:
    """How many file descriptors this process has open (a leak shows as a steady climb
    towards the unit's limit, systemd's soft default 1024); None where /proc is absent."""
    try:
        return sum(1 for _ in fd_dir.iterdir())
    except OSError:
        return None
