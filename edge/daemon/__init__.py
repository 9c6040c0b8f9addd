"""The daemon: the one place where source, detector, scene, presence tracking and sink are wired.

In: a checked :class:`~edge.config.Config`. Out: a running loop (``edge-face run``), its stats,
sd_notify readiness and watchdog, reload on SIGHUP; exit codes from :mod:`edge.exitcodes`.
Modules: :mod:`~edge.daemon.loop` (assembly, the frame loop, reload, stats; ``run_main``),
:mod:`~edge.daemon.startup_signals`, :mod:`~edge.daemon.sdnotify`, :mod:`~edge.daemon.memory`
(freed frame buffers back to the system), :mod:`~edge.daemon.snapshot` (the event's frame as a
JPEG), :mod:`~edge.daemon.preview` (``edge-face preview``: one assembled frame, drawn).
"""

from edge._moved import moved_name


def __getattr__(name: str) -> object:
    return moved_name(__name__, name)  # this path was a module before; its names still resolve, with a warning
