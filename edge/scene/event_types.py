"""The presence event vocabulary: the names of the events the daemon publishes, stated once.

Stdlib only and free of numpy on purpose: :mod:`edge.mqtt.discovery` announces these names to Home
Assistant and is imported by ``fleet``, ``forget`` and ``check-config``, which start without
numpy; :mod:`edge.scene.events` makes the events themselves.
"""

FACE_DETECTED = "face_detected"
COUNT_CHANGED = "count_changed"
FACE_CLEARED = "face_cleared"
EVENT_TYPES = (FACE_DETECTED, COUNT_CHANGED, FACE_CLEARED)
