"""The presence event vocabulary: the names of the events the daemon publishes, stated once.

Stdlib only and free of numpy on purpose: :mod:`edge.mqtt.discovery` announces these names to Home
Assistant and is imported by ``fleet``, ``forget`` and ``check-config``, which start without
numpy; :mod:`edge.scene.events` makes the events themselves.

The face events say how many faces there are; the person events (recognition on, see
:mod:`edge.scene.persons`) say who: ``person_arrived`` / ``person_left`` carry ``"person"``, an
enrolled name or null for someone not enrolled ("unknown"), and the ``"track_id"`` of the face.
"""

FACE_DETECTED = "face_detected"
COUNT_CHANGED = "count_changed"
FACE_CLEARED = "face_cleared"
PERSON_ARRIVED = "person_arrived"
PERSON_LEFT = "person_left"
PERSON_EVENT_TYPES = (PERSON_ARRIVED, PERSON_LEFT)
EVENT_TYPES = (FACE_DETECTED, COUNT_CHANGED, FACE_CLEARED, *PERSON_EVENT_TYPES)
