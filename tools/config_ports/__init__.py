"""Ports of part of edge.config's schema ([device], [camera], [mqtt], [scene]) to config
libraries, for tools/bench_config_libs.py: the same keys, defaults, derived values and
one-line errors, written with msgspec and with pydantic v2, to measure what each costs
(import time, RSS, glue code) against the home-made rule framework. Not used by edge/.

Each port module has ``load(data, base_dir, environ, hostname) -> dict`` (the sections as
plain values, see :func:`tools.config_ports.reference.plain`) raising
``edge.config.ConfigError``.
"""
