"""Factories of the daemon's replaceable parts: the detector and the sink (the transport draining
the outbox). Used at start-up (:func:`edge.daemon.loop.build_daemon`) and by a reload
(:mod:`edge.daemon.reload`, :mod:`edge.daemon.sink_switch`).

In: a checked :class:`~edge.config.Config`. Out: a :class:`FaceDetector` or an
:class:`EventSink` (not started), or :class:`StartupError` with the exit code of its kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge.config import Config, ConfigError
from edge.detect.detector import DetectorOptions, FaceDetector
from edge.detect.model import ModelError
from edge.exitcodes import ExitCode
from edge.mqtt.outbox import Outbox
from edge.mqtt.sinks import EventSink, StdoutSink


class StartupError(Exception):
    """A part that cannot be built or started; ``exit_code`` says which kind (config 2, source 3, model 4)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def model_settings(config: Config) -> tuple[Path, int | None]:
    """What loading the model depends on (the thresholds do not)."""
    return config.detector.model, config.detector.num_threads


def build_detector(config: Config) -> FaceDetector:
    settings = config.detector
    try:
        return FaceDetector(
            settings.model,
            DetectorOptions(
                score_threshold=settings.score_threshold,
                iou_threshold=settings.iou_threshold,
                num_threads=settings.num_threads,
            ),
        )
    except ModelError as exc:
        raise StartupError(str(exc), ExitCode.MODEL) from None
    except OSError as exc:
        raise StartupError(f"model '{settings.model}': cannot be read ({exc.strerror})", ExitCode.MODEL) from None


def outbox_bounds(config: Config) -> tuple[int, int]:
    """(max events, max bytes) of the outbox for ``config``."""
    return config.mqtt.queue_size, config.mqtt.queue_bytes


def build_sink(
    config: Config,
    model_id: str,
    outbox: Outbox | None = None,
    on_crash: Callable[[str, BaseException], None] | None = None,
    retired_zones: tuple[str, ...] = (),
) -> EventSink:
    """The transport draining ``outbox`` (None: a new one bounded by ``config``): stdout JSON
    lines without ``[mqtt] host``; the MQTT transport (not yet started) with it. Raises
    StartupError (exit 2) when the sink rejects its settings."""
    outbox = outbox if outbox is not None else Outbox(*outbox_bounds(config))
    if config.mqtt.host is None:
        return StdoutSink(outbox=outbox)
    from edge.mqtt.sink import MqttSink  # paho is loaded only when MQTT is configured

    try:
        return MqttSink(
            config.mqtt,
            config.homeassistant,
            config.device.id,
            model_id,
            config.snapshot.enabled,
            logging.getLogger("edge.mqtt"),
            outbox,
            on_crash=on_crash,
            zones=config.scene.zone_names,
            retired_zones=retired_zones,
            snapshot_max_bytes=config.snapshot.max_bytes,
        )
    except ConfigError as exc:
        raise StartupError(str(exc), ExitCode.CONFIG) from None
