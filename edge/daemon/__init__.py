"""The daemon: the one place where source, detector, scene, presence tracking and sink are wired.

In: a checked :class:`~edge.config.Config`. Out: a running loop (``edge-face run``), its stats,
sd_notify readiness and watchdog, reload on SIGHUP; exit codes from :mod:`edge.exitcodes`.
Modules: :mod:`~edge.daemon.loop` (``build_daemon``, the one place that wires the parts; the
frame loop and its lifecycle; ``run_main``), :mod:`~edge.daemon.pipeline` (one frame: motion
gate, detector, scene, presence, events; where a new per-frame stage goes),
:mod:`~edge.daemon.recognition` (the scene's tracks composed with face recognition),
:mod:`~edge.daemon.people` (enrol / forget from Home Assistant, the people the sink announces),
:mod:`~edge.daemon.live` (reload, Home Assistant's commands, the privacy pause, applied between
frames), :mod:`~edge.daemon.reload` (the reload plan and path), :mod:`~edge.daemon.commands`
(command dispatch), :mod:`~edge.daemon.camera` (grabber, pause, source swap),
:mod:`~edge.daemon.sink_switch` (transport start and swap, identity retirement),
:mod:`~edge.daemon.parts` (detector and sink factories), :mod:`~edge.daemon.stats`,
:mod:`~edge.daemon.retained`, :mod:`~edge.daemon.startup_signals`, :mod:`~edge.daemon.sdnotify`,
:mod:`~edge.daemon.memory` (freed frame buffers back to the system), :mod:`~edge.daemon.snapshot`
(the event's frame as a JPEG), :mod:`~edge.daemon.preview` (``edge-face preview``: one assembled
frame, drawn).
"""

from edge._moved import moved_name


def __getattr__(name: str) -> object:
    return moved_name(__name__, name)  # this path was a module before; its names still resolve, with a warning
