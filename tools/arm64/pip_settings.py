"""Carry the host's pip network settings into the emulated chroot.

The chroot has no pip configuration of its own, but it must reach the same package index
as the host (same index URL, proxy, CA bundle). The host's effective settings come from
``pip config list`` (files and PIP_* environment merged); only the settings that say where
packages come from are carried over. Local index folders (``file://`` URLs, find-links
paths) are bind-mounted read-only at the same path; those that do not exist are dropped.
Host-only settings such as constraint files stay behind: they describe the host's disk.

    python -m tools.arm64.pip_settings HOST_PYTHON

prints lines the shell script reads:
    env NAME=VALUE    an environment variable for pip inside the chroot
    bind PATH         a host folder to bind-mount read-only at PATH inside the chroot
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

# Where the chroot's CA bundle sits; the script bind-mounts the host's bundle onto it.
CHROOT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# pip option name -> (environment variable, what its value is)
LOCATIONS, INDEX_LOCATIONS, PLAIN = "locations", "index locations", "plain"
CARRIED_OPTIONS = {
    "index-url": ("PIP_INDEX_URL", INDEX_LOCATIONS),
    "extra-index-url": ("PIP_EXTRA_INDEX_URL", INDEX_LOCATIONS),
    "find-links": ("PIP_FIND_LINKS", LOCATIONS),
    "no-index": ("PIP_NO_INDEX", PLAIN),
    "trusted-host": ("PIP_TRUSTED_HOST", PLAIN),
    "proxy": ("PIP_PROXY", PLAIN),
    "timeout": ("PIP_DEFAULT_TIMEOUT", PLAIN),
    "default-timeout": ("PIP_DEFAULT_TIMEOUT", PLAIN),
    "retries": ("PIP_RETRIES", PLAIN),
}
# Later scopes win, as in pip: [global] < [install] < environment.
SCOPE_PRIORITY = {"global": 0, "install": 1, ":env:": 2}


@dataclass(frozen=True)
class ChrootPipSettings:
    environment: dict[str, str]
    bind_paths: tuple[str, ...]
    host_ca_bundle: str | None


def parse_config_list(text: str) -> dict[str, str]:
    """Effective option -> value from ``pip config list`` lines like ``global.cert='/x'``."""
    chosen: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        key, sep, raw_value = line.partition("=")
        scope, dot, option = key.rpartition(".")
        if not sep or not dot or scope not in SCOPE_PRIORITY:
            continue
        try:
            value = str(ast.literal_eval(raw_value))
        except (ValueError, SyntaxError):
            value = raw_value
        priority = SCOPE_PRIORITY[scope]
        if option not in chosen or chosen[option][0] <= priority:
            chosen[option] = (priority, value)
    return {option: value for option, (_, value) in chosen.items()}


def _local_folder(location: str) -> str | None:
    """The host path behind a file:// URL or a plain path, None for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" and location.startswith("/"):
        return location
    return None


def chroot_settings(options: dict[str, str]) -> ChrootPipSettings:
    environment = {"PIP_CONFIG_FILE": "/dev/null", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    bind_paths: list[str] = []
    for option, (variable, kind) in CARRIED_OPTIONS.items():
        if option not in options:
            continue
        if kind == PLAIN:
            environment[variable] = options[option]
            continue
        kept = []
        for location in options[option].split():
            folder = _local_folder(location)
            if folder is None:
                kept.append(location)
            elif Path(folder).is_dir():
                kept.append(location)
                # A local "simple" index links to its files with relative URLs (../../files/..):
                # the folder holding the index root must be visible too.
                bind_paths.append(str(Path(folder).parent) if kind == INDEX_LOCATIONS else folder)
        if kept:
            environment[variable] = " ".join(kept)
    host_ca_bundle = options.get("cert")
    environment["PIP_CERT"] = CHROOT_CA_BUNDLE
    return ChrootPipSettings(environment, tuple(dict.fromkeys(bind_paths)), host_ca_bundle)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.arm64.pip_settings HOST_PYTHON", file=sys.stderr)
        return 2
    result = subprocess.run([argv[0], "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"{argv[0]} -m pip config list failed: {result.stderr.strip()}", file=sys.stderr)
        return 2
    settings = chroot_settings(parse_config_list(result.stdout))
    for name, value in settings.environment.items():
        print(f"env {name}={value}")
    for path in settings.bind_paths:
        print(f"bind {path}")
    if settings.host_ca_bundle:
        print(f"cert {settings.host_ca_bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
