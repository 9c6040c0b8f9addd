"""edge-face: an int8 face detector for Raspberry Pi class boards, with face events over MQTT.

The numeric core (priors, decode, NMS) is pure numpy; the interpreter, camera and MQTT
libraries are imported only inside the modules that need them, so ``import edge`` stays fast
and the device install stays small. One package per stage (detect, sources, scene, recognize,
mqtt, ops, daemon; common helpers below them all), imports only downward: docs/architecture.md.
"""

__version__ = "0.1.0"

from edge import _moved  # the old module paths keep importing, with a warning

_moved.install()
