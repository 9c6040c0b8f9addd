"""The daemon's camera: the frame grabber the loop reads from, the privacy switch that closes
it, and its replacement by a reload.

In: a :class:`FrameSource` and its ``[camera]`` settings, the detector's input size (a camera
built by :func:`build_source` may deliver that size). Out: :attr:`Camera.grabber` for the frame
loop. A source that can never be opened again (neither the new one nor the previous one) is
reported once through ``on_lost``; the daemon then stops with ExitCode.SOURCE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edge.config import CameraConfig
from edge.daemon.parts import StartupError
from edge.exitcodes import ExitCode
from edge.sources.auto import build_source
from edge.sources.base import FrameSource, SourceError
from edge.sources.grabber import FrameGrabber

log = logging.getLogger("edge.daemon")


class Camera:
    """The running grabber and what it was made with. ``paused``: detection switched off from
    Home Assistant, the camera closed (the grabber is kept, not started). ``reported_state``:
    the source state the last stats message reported (a change is reported at once)."""

    def __init__(
        self,
        source: FrameSource,
        settings: CameraConfig,
        input_size: tuple[int, int],
        *,
        paused: bool,
        on_crash: Callable[[str, BaseException], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._on_crash, self._on_lost = on_crash, on_lost
        self.settings, self.input_size = settings, input_size
        self.grabber = self._grabber_for(source, settings)
        self.paused = paused
        self.reported_state = "ok"

    def swap(self, settings: CameraConfig, input_size: tuple[int, int]) -> None:
        """Stop the camera, open the newly configured one; if it fails, reopen the old one
        (a camera cannot be opened twice, so the old one must be released first) and raise
        StartupError (exit 3)."""
        try:
            source = build_source(settings, input_size)
        except SourceError as exc:
            raise StartupError(str(exc), ExitCode.SOURCE) from None
        if self.paused:  # privacy mode: the new camera is opened when detection is switched on
            self._replace(self._grabber_for(source, settings), settings, input_size)
            return
        old_grabber = self.grabber
        old_grabber.stop()
        grabber = self._grabber_for(source, settings)
        try:
            grabber.start(wait_for_live=False)
        except SourceError as exc:
            try:
                self.grabber = self._grabber_for(self._source_after(old_grabber), self.settings)
                self.grabber.start()
            except SourceError as again:
                log.error("the previous source cannot be reopened either: %s", again)
                self._on_lost()
            raise StartupError(str(exc), ExitCode.SOURCE) from None
        self._replace(grabber, settings, input_size)
        self.reported_state = "ok"

    def pause(self) -> None:
        """Release the camera: no frame is read until :meth:`resume`."""
        self.paused = True
        self.grabber.stop()

    def resume(self) -> bool:
        """Open the camera again (a live camera that is gone meanwhile is waited for); False,
        reported through ``on_lost``, when the source can never be opened."""
        try:
            grabber = self._grabber_for(self._source_after(self.grabber), self.settings)
            grabber.start()
        except SourceError as exc:
            log.error("detection resumed, but the source can never be opened: %s", exc)
            self._on_lost()
            return False
        self.grabber, self.paused, self.reported_state = grabber, False, "ok"
        return True

    def _replace(self, grabber: FrameGrabber, settings: CameraConfig, input_size: tuple[int, int]) -> None:
        self.grabber, self.settings, self.input_size = grabber, settings, input_size

    def _source_after(self, stopped: FrameGrabber) -> FrameSource:
        """The source for a grabber that replaces ``stopped``: the same object when its reader
        has let go of it, else a new one from the running settings (a reader still blocked in
        the driver may use it yet; a source is never used by two threads)."""
        if stopped.released:
            return stopped.source
        log.warning("%s: its reader is still blocked; opening a new source object", stopped.source.name)
        return build_source(self.settings, self.input_size)

    def _grabber_for(self, source: FrameSource, settings: CameraConfig) -> FrameGrabber:
        return FrameGrabber(
            source,
            reopen_min_delay=settings.reopen_min_delay,
            reopen_max_delay=settings.reopen_max_delay,
            logger=logging.getLogger("edge.sources"),
            on_crash=self._on_crash,
        )
