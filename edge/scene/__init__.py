r"""The scene stage: what the detector's faces mean in this camera's view, and when that is news.

In: each frame (the motion gate decides whether the detector runs at all) and the detector's
:class:`~edge.detect.decode.Detections`. Out: the faces that count (after masks, face-size limits
and zones) and presence :class:`~edge.scene.events.Event`\ s (face_detected, count_changed,
face_cleared). Modules: :mod:`~edge.scene.motion` (motion gate), :mod:`~edge.scene.rules` (masks,
sizes, zones, drawing them), :mod:`~edge.scene.stage` (both around the detector, for the daemon),
:mod:`~edge.scene.events` (presence state -> events), :mod:`~edge.scene.event_types` (the event
names, numpy-free), :mod:`~edge.scene.tracks` (a face followed across frames) and
:mod:`~edge.scene.persons` (who is there by name, once recognition has said who a track is).
"""

from edge._moved import moved_name


def __getattr__(name: str) -> object:
    return moved_name(__name__, name)  # this path was a module before; its names still resolve, with a warning
