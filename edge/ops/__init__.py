"""Operator commands around the broker, and the device identity they share with the daemon.

In: a config file and the broker's retained messages (untrusted). Out: one line per device
(``edge-face fleet``, :mod:`~edge.ops.fleet`), a device removed from the broker and Home
Assistant (``edge-face forget``, :mod:`~edge.ops.forget`), who this device is across renames and
the retirement of its old identity (:mod:`~edge.ops.device_identity`, used by the daemon), and
``edge-face check-config [--as-user]`` (:mod:`~edge.ops.check_config`, :mod:`~edge.ops.asuser`).
Numpy-free: these start fast on a device.
"""
