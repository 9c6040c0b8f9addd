"""The ``[snapshot]``, ``[stats]`` and ``[log]`` sections: what only the daemon reads.

The daemon attaches snapshots to events (:mod:`edge.daemon.snapshot`), publishes its
statistics and sets the log level; no stage below it sees these keys. Declared here and read
by edge.config; numpy-free and importing only rank 0 (edge.common), like every ``settings``
module.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.common.config_rules import Boolean, Choice, Integer, KeySection, Number, key

LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class SnapshotConfig:
    enabled: bool = key(Boolean(), False)
    max_bytes: int = key(Integer(2_000, 10_000_000), 100_000)
    quality: int = key(Integer(10, 95), 80)


@dataclass(frozen=True)
class StatsConfig:
    interval_seconds: float = key(Number(1.0, 86400.0), 60.0)


@dataclass(frozen=True)
class LogConfig:
    level: str = key(Choice(LOG_LEVELS), "info")


SNAPSHOT_SECTION = KeySection(SnapshotConfig)
STATS_SECTION = KeySection(StatsConfig)
LOG_SECTION = KeySection(LogConfig)
