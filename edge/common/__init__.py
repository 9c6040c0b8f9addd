"""Shared helpers (rank 0 of the layer rule in docs/architecture.md): stdlib only, nothing of the pipeline.

In: paths, bytes and text from users and the broker. Out: files opened safely, whole-or-nothing
writes, text fit for a log. Modules: :mod:`~edge.common.files` (opening a file a user named),
:mod:`~edge.common.atomic` (whole-or-nothing writes), :mod:`~edge.common.redact` (credentials
out of log lines), :mod:`~edge.common.untrusted` (broker text made safe to hold and print),
:mod:`~edge.common.options` (the error scene and motion settings raise),
:mod:`~edge.common.config_rules` (the rule framework every config section is declared with),
:mod:`~edge.common.sysinfo` (CPU temperature, open file descriptors). Beside this package at
the top of ``edge``: ``config`` (the TOML loader), ``exitcodes`` and ``models`` (the shipped model).
"""
