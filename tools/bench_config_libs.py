"""Measure a config library against edge.config's home-made rule framework on a Pi budget.

    python -m tools.bench_config_libs [--site msgspec=DIR] [--site pydantic=DIR] [--runs N]
                                      [--loads N] [--random-docs N] [--wheels DIR]
                                      [--daemon 'BENCH_DAEMON_ARGS']
                                      [--python 'COMMAND' [--python-path DIR]]

Three implementations of the same four sections ([device], [camera], [mqtt], [scene]):
edge.config itself (tools/config_ports/reference.py) and the ports to msgspec and pydantic v2
(tools/config_ports/). For each it prints:

* errors: the corpus of bad and good documents (the cases of tests/test_config.py and
  tests/test_scene.py for these sections, plus ``--random-docs`` seeded random documents
  built from the schema) through every implementation: how many give the reference's exact
  one-line error (or the same values), and the first differences;
* glue: code lines (no blanks, comments, docstrings) of each port, split into the section
  declarations and the glue around them, next to tools/config_ports/common.py (host rules
  every port needs) and edge/config.py;
* import time, from ``python -X importtime`` (the cumulative time of what ``import`` of the
  port pulls in beyond the interpreter and numpy, which the daemon imports anyway), median
  of ``--runs`` fresh processes: cold (bytecode compiled from source, an empty
  ``-X pycache_prefix``) and warm (the .pyc files written by a previous run);
* RSS added over an interpreter with numpy imported (VmRSS from /proc/self/status): after
  the import, after ``--loads`` loads of a demo-like document, and the peak (VmHWM);
* with ``--daemon``: the daemon's peak RSS, tools.bench_daemon's installed-like run
  (``--snapshot``, MQTT, no OpenCV) with each port imported first, e.g. ``--daemon
  '--mqtt-port 1883 --model models/build/version-slim-320-int8.tflite'``.

The measurements run in child processes of ``--python`` (default: this interpreter), so an
emulated aarch64 interpreter measures there, e.g. ``--python 'qemu-aarch64 -L ROOT -cpu
cortex-a72 ROOT/usr/bin/python3.11' --python-path VENV/lib/python3.11/site-packages`` (where
the children find numpy). Children write bytecode only under a scratch ``pycache_prefix``.
``--site LIB=DIR`` adds a folder holding the library (pip install --target DIR) to that
port's children only (and here, for the error comparison, when it is importable here).
``--wheels DIR`` downloads (pip download --only-binary :all:) each library's wheels for
aarch64 and armv7l, CPython 3.11 and 3.13, into DIR and lists them. A library that is not
importable is reported as such, not measured.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PORTS = {
    "edge.config": "tools.config_ports.reference",
    "msgspec": "tools.config_ports.msgspec_port",
    "pydantic": "tools.config_ports.pydantic_port",
}
# What each library needs on the device, as pip names them (pydantic-core is the compiled part).
DISTRIBUTIONS = {"msgspec": ["msgspec"], "pydantic": ["pydantic", "pydantic-core"]}
WHEEL_PLATFORMS = [("aarch64", "manylinux2014_aarch64"), ("armv7l", "manylinux2014_armv7l")]
WHEEL_PYTHONS = ["311", "313"]

# --- the corpus ----------------------------------------------------------------------------------

# Bad documents: the cases of tests/test_config.py and tests/test_scene.py for the ported
# sections, and a few more of the same kinds. FRAMES (a folder), PASSWORD, LATIN1 are files
# the bench creates in the documents' folder.
BAD_DOCUMENTS = [
    "[mqtt]\nport = 70000\n",
    '[mqtt]\nport = "1883"\n',
    "[mqtt]\nport = 1883.0\n",
    "[mqtt]\nhots = 1\n",
    "[mqttt]\n",
    "camera = 1\n",
    '[device]\nid = "Living Room"\n',
    '[device]\nid = "a/b"\n',
    "[device]\nid = 5\n",
    '[device]\nstate_dir = ""\n',
    '[mqtt]\nprotocol = "4"\n',
    "[mqtt]\nprotocol = true\n",
    '[mqtt]\ntransport = "udp"\n',
    '[mqtt]\ntopic_prefix = "home/#"\n',
    '[mqtt]\ntopic_prefix = "home//x"\n',
    '[mqtt]\ntopic_prefix = "home/{host}"\n',
    '[mqtt]\ntopic_prefix = "$SYS/x"\n',
    '[mqtt]\ntopic_prefix = "a/\\u0001/b"\n',
    "[mqtt]\nkeepalive = 0\n",
    "[mqtt]\nqueue_size = 0\n",
    "[mqtt]\nqueue_size = 1000000\n",
    "[mqtt]\nqueue_bytes = 1\n",
    "[mqtt]\nreconnect_min_delay = 10\nreconnect_max_delay = 5\n",
    "[mqtt]\nflush_timeout = 45\n",
    "[mqtt]\nflush_timeout = inf\n",
    '[mqtt]\nhost = "mqtt://broker"\n',
    '[mqtt]\nhost = "br\\u00f6ker.lan"\n',
    '[mqtt]\nhost = "a..b"\n',
    '[mqtt]\nhost = "user:pw@broker"\n',
    '[mqtt]\nclient_id = "has space"\n',
    '[mqtt]\nusername = ""\n',
    '[mqtt]\nca_file = "ca.pem"\n',
    '[mqtt]\nca_file = "PASSWORD"\n',
    "[mqtt]\ntls_insecure = true\n",
    "[mqtt.tls]\nx = 1\n",
    '[mqtt]\nhost = "b"\npassword_file = "PASSWORD"\n',
    '[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "LATIN1"\n',
    '[camera]\nsource = "usb"\n',
    '[camera]\nsource = "replay"\n',
    '[camera]\npath = "no-such-folder"\n',
    '[camera]\npath = "a\\u0000b"\n',
    "[camera]\nwidth = 320\n",
    "[camera]\nwidth = 8\nheight = 8\n",
    "[camera]\nfps = 0\n",
    "[camera]\nfps = nan\n",
    '[camera]\npicamera2_stream = "raw"\n',
    "[camera]\nreopen_min_delay = 0\n",
    "[camera]\nreopen_min_delay = 10\nreopen_max_delay = 5\n",
    '[camera]\nloop = "yes"\n',
    "[camera]\nmax_pixels = 100\n",
    '[camera]\ndevice = "x\\ny"\n',
    '[camera]\ndevice = "rtsp://admin:hunter2@cam/' + "x" * 500 + '\\n"\n',
    "[camera]\ncamera_index = 99999999999999999999\n",
    "[scene]\nmasks = 1\n",
    "[scene]\nmask = []\n",
    "[scene]\nmasks = [[[0, 0], [1, 0]]]\n",
    "[scene]\nmasks = [[[0, 0], [1, 0], [1, 2]]]\n",
    "[scene]\nmasks = [[[0, 0], [1, 0], [1]]]\n",
    "[scene]\nmasks = [[[0, 0], [1, 0], [1, true]]]\n",
    '[scene]\nmasks = [[[0, 0], [1, 0], [1, "a"]]]\n',
    "[scene]\nmasks = [[[0, 0], [0.5, 0.5], [1, 1]]]\n",
    "[scene]\nmasks = [" + ", ".join(["[[0, 0], [1, 0], [1, 1]]"] * 33) + "]\n",
    "[scene]\nmin_face_size = -1\n",
    "[scene]\nmin_face_size = 20\nmax_face_size = 10\n",
    "[scene]\nmax_face_size = 9000\n",
    "[scene]\nmax_face_size = true\n",
    "[scene]\nzones = 1\n",
    "[scene]\nzones = [1]\n",
    '[[scene.zones]]\nname = "door"\npolygon = [[0, 0], [1, 0], [1, 1]]\nkind = 1\n',
    '[[scene.zones]]\nname = "door"\n',
    '[[scene.zones]]\nname = "Door"\npolygon = [[0, 0], [1, 0], [1, 1]]\n',
    '[[scene.zones]]\nname = "door"\npolygon = [[2, 0], [1, 0], [1, 1]]\n',
    '[[scene.zones]]\nname = "door"\npolygon = [[0, 0], [1, 0], [1, 1]]\n'
    '[[scene.zones]]\nname = "door"\npolygon = [[0, 0], [1, 0], [0, 1]]\n',
    "".join(f'[[scene.zones]]\nname = "z{i}"\npolygon = [[0, 0], [1, 0], [1, 1]]\n' for i in range(17)),
]

GOOD_DOCUMENTS = [
    "",
    "[mqtt]\nprotocol = 5\n",
    '[mqtt]\nhost = "broker.lan"\ntls = true\n',
    '[device]\nid = "hall"\n[mqtt]\ntopic_prefix = "home/{device_id}/faces"\n',
    '[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "PASSWORD"\n',
    '[camera]\nsource = "replay"\npath = "FRAMES"\nloop = true\nwidth = 640\nheight = 480\nfps = 2\n',
]


def demo_document() -> str:
    """A demo-like document (examples/demo.toml's keys, a broker, a scene) for the load figures."""
    return (
        '[device]\nid = "demo"\n'
        '[camera]\nsource = "replay"\npath = "FRAMES"\nfps = 2.0\n'
        '[mqtt]\nhost = "broker.lan"\nusername = "u"\npassword_file = "PASSWORD"\n'
        "keepalive = 30\nqueue_size = 1000\nflush_timeout = 5.0\n"
        "[scene]\nmasks = [[[0, 0], [0.2, 0], [0.2, 0.3], [0, 0.3]]]\nmin_face_size = 24\n"
        '[[scene.zones]]\nname = "door"\npolygon = [[0.6, 0], [1, 0], [1, 1], [0.6, 1]]\n'
        '[[scene.zones]]\nname = "sofa"\npolygon = [[0, 0.5], [0.5, 0.5], [0.5, 1], [0, 1]]\n'
    )


def make_fixtures(folder: Path) -> None:
    from tools.config_ports.reference import MODEL_NAME

    (folder / MODEL_NAME).write_bytes(b"x")
    (folder / "FRAMES").mkdir(exist_ok=True)
    (folder / "PASSWORD").write_text("s3cret\n", encoding="utf-8")
    (folder / "LATIN1").write_bytes(b"caf\xe9\n")


def random_documents(count: int, seed: int = 20) -> list[str]:
    """Documents of 1-3 keys of the ported sections with values from a pool of the kinds
    that break rules (limits, wrong types, NaN, huge integers, tables, polygons)."""
    from edge.config import schema

    keys = [(section, name) for section, name, _rule, _default in schema() if section in ("device", "camera", "mqtt")]
    keys += [("scene", name) for name in ("masks", "min_face_size", "max_face_size", "zones")]
    pool: list[Any] = [
        0, 1, 5, 15, 16, 8192, 65535, 70000, -1, 10**30, 0.5, 1.5, 2.0, 20.5, math.nan, math.inf,
        True, False, "", "x", "5", "3.1.1", "auto", "replay", "main", "tcp", "a b", "home/#",
        "edge/{device_id}", "{id}", "b", "FRAMES", "PASSWORD", "$SYS", "\u00e9", [], [1],
        [[0, 0], [1, 0], [1, 1]], [[[0, 0], [1, 0], [1, 1]]], [[[0, 0], [1, 0], [2, 1]]], {"x": 1},
        [{"name": "door", "polygon": [[0, 0], [1, 0], [1, 1]]}], [{"name": "Door"}],
    ]  # fmt: skip
    chooser = random.Random(seed)
    documents = []
    for _ in range(count):
        tables: dict[str, dict[str, Any]] = {}
        for section, name in chooser.sample(keys, chooser.randint(1, 3)):
            tables.setdefault(section, {})[name] = chooser.choice(pool)
        documents.append(to_toml(tables))
    return documents


def to_toml(tables: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {toml_value(value)}" for name, value in table.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else "inf"
    if isinstance(value, (int, float, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return "{" + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + "}"


def outcome(load: Callable[..., Any], text: str, folder: Path) -> str:
    """The one-line error, or the parsed values as JSON; anything else is a crash."""
    from edge.config import ConfigError
    from tools.config_ports.reference import plain

    data = tomllib.loads(text)
    try:
        return json.dumps(plain(load(data, folder, {}, "pi")), sort_keys=True, default=str)
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # the point of the comparison: a port must not crash
        return f"CRASH {type(exc).__name__}: {exc}"


# --- children: one measurement in a fresh interpreter ---------------------------------------------

CHILD_RSS = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024.0
import numpy  # the daemon's baseline
import tomllib
from pathlib import Path
base = status("VmRSS")
module = __import__(sys.argv[2], fromlist=["load"])
after_import = status("VmRSS")
folder, text, loads = Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
start = time.perf_counter()
for _ in range(loads):
    module.load(tomllib.loads(text), folder, {}, "pi")
per_load = (time.perf_counter() - start) / loads
print(after_import - base, status("VmRSS") - base, status("VmHWM") - base, per_load * 1e3)
"""


class Children:
    """How a measuring child starts: ``python`` (a command, e.g. an emulator and a guest
    interpreter), with PYTHONPATH the project, the library's folder and ``path`` (numpy)."""

    def __init__(self, python: list[str], path: list[Path], pycache: Path) -> None:
        self.python, self.path, self.pycache = python, path, pycache

    def run(
        self, site: Path | None, arguments: list[str], pycache: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        folders = [PROJECT_ROOT, *([site] if site else []), *self.path]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(folder) for folder in folders))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # Bytecode goes to our own folder only: never into an interpreter's or a venv's tree.
        prefix = ["-X", f"pycache_prefix={pycache or self.pycache}"]
        return subprocess.run(
            [*self.python, *prefix, *arguments], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT
        )


def import_ms(children: Children, module: str, site: Path | None, pycache: Path) -> float:
    """Cumulative import time (ms) of what ``import module`` adds after numpy."""
    code = f"import numpy, sys; sys.stderr.write('-- mark\\n'); import {module}"
    result = children.run(site, ["-X", "importtime", "-c", code], pycache)
    result.check_returncode()
    lines = result.stderr.split("-- mark\n", 1)[1].splitlines()
    total_us = 0
    for line in lines:
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)
        if match and not match.group(2).startswith(" "):  # a top-level import of the statement
            total_us += int(match.group(1))
    return total_us / 1000.0


def measure_imports(
    children: Children, module: str, site: Path | None, runs: int, scratch: Path
) -> tuple[float, float]:
    cold = [import_ms(children, module, site, scratch / f"cold-{run}") for run in range(runs)]
    import_ms(children, module, site, children.pycache)  # fills the warm cache
    warm = [import_ms(children, module, site, children.pycache) for _ in range(runs)]
    return statistics.median(cold), statistics.median(warm)


def measure_rss(children: Children, module: str, site: Path | None, folder: Path, loads: int, runs: int) -> list[float]:
    """Median over ``runs`` of [MB after import, MB after loads, MB peak, ms per load]."""
    samples = []
    for _ in range(runs):
        result = children.run(
            site, ["-c", CHILD_RSS, str(PROJECT_ROOT), module, str(folder), demo_document(), str(loads)]
        )
        result.check_returncode()
        samples.append([float(value) for value in result.stdout.split()])
    return [statistics.median(column) for column in zip(*samples, strict=True)]


def importable(children: Children, module: str, site: Path | None) -> str | None:
    """None, or why ``module`` cannot be imported by a child."""
    result = children.run(site, ["-c", f"import {module}"])
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["failed"])[-1]


# --- code lines ------------------------------------------------------------------------------------


def code_lines(path: Path) -> tuple[int, int]:
    """(lines of section declarations, other code lines) of ``path``: no blank lines,
    comments or docstrings. Declarations are the classes named *Section or *Config (the
    dataclasses of the sections in edge/config.py and edge/*/settings.py among them)."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    declared: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and re.search(r"(Section|Config)$", node.name) and node.name != "ConfigError":
            declared.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    counted = [
        number
        for number, line in enumerate(source.splitlines(), start=1)
        if line.strip() and not line.strip().startswith("#") and number not in docstrings
    ]
    in_declarations = sum(1 for number in counted if number in declared)
    return in_declarations, len(counted) - in_declarations


# --- wheels -----------------------------------------------------------------------------------------


def list_wheels(folder: Path) -> list[str]:
    rows = []
    for library, distributions in DISTRIBUTIONS.items():
        for arch, platform in WHEEL_PLATFORMS:
            for python in WHEEL_PYTHONS:
                target = folder / f"{library}-{arch}-cp{python}"
                target.mkdir(parents=True, exist_ok=True)
                found = []
                for distribution in distributions:
                    result = subprocess.run(
                        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                         "--platform", platform, "--python-version", python, "--implementation", "cp",
                         "-d", str(target), distribution],
                        capture_output=True,
                        text=True,
                    )  # fmt: skip
                    name = distribution.replace("-", "_")
                    wheels = sorted([*target.glob(f"{name}-*{arch}*.whl"), *target.glob(f"{name}-*-none-any.whl")])
                    if result.returncode != 0 or not wheels:
                        found.append(f"{distribution}: no wheel")
                    else:
                        found.append(f"{wheels[-1].name} ({wheels[-1].stat().st_size / 1024:.0f} KiB)")
                rows.append(f"  {library:9} {arch:8} cp{python}: " + "; ".join(found))
    return rows


# --- the daemon ------------------------------------------------------------------------------------

# Put first on the daemon child's path: imports the port before the daemon starts, so its peak
# RSS includes the library and the declared sections; cv2 unimportable, as on a device without
# the opencv extra (the installed-like figure of the README).
DAEMON_PRELOAD = """import sys
sys.modules["cv2"] = None
{imports}
"""


def daemon_peak_rss(library: str, site: Path | None, scratch: Path, bench_args: list[str]) -> float:
    """Peak RSS (MB) of tools.bench_daemon's installed-like run with ``library``'s port loaded."""
    preload = scratch / f"preload-{library}"
    preload.mkdir()
    imports = "" if library == "edge.config" else f"import {PORTS[library]}"
    (preload / "sitecustomize.py").write_text(DAEMON_PRELOAD.format(imports=imports), encoding="utf-8")
    figures = scratch / f"daemon-{library}.json"
    folders = [preload, PROJECT_ROOT, *([site] if site else [])]
    result = subprocess.run(
        [sys.executable, "-m", "tools.bench_daemon", "--snapshot", "--json", str(figures), *bench_args],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(str(folder) for folder in folders)),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if not figures.exists():
        raise SystemExit(f"tools.bench_daemon failed for {library}: {result.stderr.strip()[-600:]}")
    peak: float = json.loads(figures.read_text(encoding="utf-8"))["peak_rss_mb"]
    return peak


# --- the report --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--site", action="append", default=[], metavar="LIB=DIR", help="a folder holding LIB")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per timing (median)")
    parser.add_argument("--loads", type=int, default=200, help="loads of the demo-like document per RSS child")
    parser.add_argument("--random-docs", type=int, default=2000, help="seeded random documents in the corpus")
    parser.add_argument("--wheels", type=Path, help="download and list the aarch64/armv7l wheels into this folder")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the children's interpreter, a command (default: this one), e.g. "
        "'qemu-aarch64 -L ROOT -cpu cortex-a72 ROOT/usr/bin/python3.11'",
    )
    parser.add_argument(
        "--daemon",
        metavar="ARGS",
        help="also run tools.bench_daemon --snapshot with each port loaded (cv2 unimportable), "
        "with these arguments, e.g. '--mqtt-port 1883': the daemon's peak RSS",
    )
    parser.add_argument(
        "--python-path", type=Path, action="append", default=[], help="a folder the children import numpy from"
    )
    args = parser.parse_args(argv)
    sites: dict[str, Path] = {}
    for item in args.site:
        library, _, folder = item.partition("=")
        if library not in DISTRIBUTIONS or not folder:
            parser.error(f"--site: {item!r} is not LIB=DIR with LIB one of {', '.join(DISTRIBUTIONS)}")
        sites[library] = Path(folder).resolve()
    for folder in sites.values():
        sys.path.insert(0, str(folder))
    sys.path.insert(0, str(PROJECT_ROOT))

    with tempfile.TemporaryDirectory(prefix="bench-config-libs-") as scratch_name:
        scratch = Path(scratch_name)
        fixtures = scratch / "fixtures"
        fixtures.mkdir()
        make_fixtures(fixtures)
        children = Children(shlex.split(args.python), args.python_path, scratch / "pyc-warm")
        where = children.run(None, ["-c", "import platform; print(platform.machine(), platform.python_version())"])
        where.check_returncode()
        print(f"children: {where.stdout.strip()} ({args.python})")
        available = {"edge.config": None} | {
            lib: importable(children, PORTS[lib], sites.get(lib)) for lib in DISTRIBUTIONS
        }
        for library, problem in available.items():
            if problem:
                print(f"{library}: not measured ({problem}); install it or pass --site {library}=DIR")
        measured = [library for library, problem in available.items() if problem is None]
        loaders = {}
        for library in measured:
            try:  # here, in this interpreter: the --site folders may be for the children's
                loaders[library] = __import__(PORTS[library], fromlist=["load"]).load
            except ImportError as exc:
                print(f"{library}: errors not compared (not importable by this interpreter: {exc})")

        corpus = BAD_DOCUMENTS + GOOD_DOCUMENTS + random_documents(args.random_docs)
        print(f"\n== errors: {len(corpus)} documents ({len(BAD_DOCUMENTS)} from the tests' cases, "
              f"{len(GOOD_DOCUMENTS)} good, {args.random_docs} random) ==")  # fmt: skip
        reference = [outcome(loaders["edge.config"], text, fixtures) for text in corpus]
        refused = sum(1 for result in reference if not result.startswith("{"))
        print(f"edge.config refuses {refused}, accepts {len(corpus) - refused}")
        for library in [library for library in measured[1:] if library in loaders]:
            results = [outcome(loaders[library], text, fixtures) for text in corpus]
            differ = [(text, ref, got) for text, ref, got in zip(corpus, reference, results, strict=True) if ref != got]
            crashes = sum(1 for result in results if result.startswith("CRASH"))
            tests_differ = sum(1 for text, _, _ in differ if text in BAD_DOCUMENTS or text in GOOD_DOCUMENTS)
            tests_count = len(BAD_DOCUMENTS) + len(GOOD_DOCUMENTS)
            print(
                f"{library}: {len(corpus) - len(differ)}/{len(corpus)} identical "
                f"(the tests' cases: {tests_count - tests_differ}/{tests_count}), {crashes} crash(es)"
            )
            for text, ref, got in differ[:6]:
                print(f"  document {text!r}\n    edge.config: {ref[:160]}\n    {library}: {got[:160]}")

        print("\n== code lines (no blanks, comments, docstrings): section declarations + glue ==")
        # The home-made framework: the loader, the rules, and each stage's settings module (all
        # sections; scene/settings.py holds the [motion]/[scene] options, polygons and zones too).
        edge = PROJECT_ROOT / "edge"
        home_made = [edge / "config.py", edge / "common" / "config_rules.py", *sorted(edge.glob("*/settings.py"))]
        for label, paths in [
            ("edge/config.py, config_rules, settings", home_made),
            ("tools/config_ports/common.py", [PROJECT_ROOT / "tools" / "config_ports" / "common.py"]),
            ("tools/config_ports/msgspec_port.py", [PROJECT_ROOT / "tools" / "config_ports" / "msgspec_port.py"]),
            ("tools/config_ports/pydantic_port.py", [PROJECT_ROOT / "tools" / "config_ports" / "pydantic_port.py"]),
        ]:
            counts = [code_lines(path) for path in paths]
            declared, other = sum(c[0] for c in counts), sum(c[1] for c in counts)
            print(f"  {label:38} {declared:4} declarations + {other:4} other = {declared + other}")

        print(f"\n== import and RSS (median of {args.runs} processes; RSS over python + numpy) ==")
        header = (
            "",
            "import ms cold",
            "import ms warm",
            "RSS MB import",
            f"RSS MB {args.loads} loads",
            "peak MB",
            "ms/load",
        )
        print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
        rows = {}
        for library in measured:
            module, site = PORTS[library], sites.get(library)
            cold, warm = measure_imports(children, module, site, args.runs, scratch / f"pyc-{library}")
            rss = measure_rss(children, module, site, fixtures, args.loads, max(3, args.runs // 2))
            rows[library] = [cold, warm, *rss]
            cells = [f"{cold:.1f}", f"{warm:.1f}", f"{rss[0]:.2f}", f"{rss[1]:.2f}", f"{rss[2]:.2f}", f"{rss[3]:.3f}"]
            print(f"| {library} | " + " | ".join(cells) + " |")
        for library in measured[1:]:
            ratios = [rows[library][i] / rows["edge.config"][i] if rows["edge.config"][i] else math.nan for i in (1, 5)]
            extra = rows[library][3] - rows["edge.config"][3]
            print(f"{library} vs edge.config: import (warm) x{ratios[0]:.1f}, load x{ratios[1]:.1f}, "
                  f"RSS after loads {extra:+.2f} MB")  # fmt: skip

        if args.daemon:
            print("\n== the daemon's peak RSS (tools.bench_daemon --snapshot, no OpenCV, the port loaded) ==")
            baseline = None
            for library in measured:
                peak = daemon_peak_rss(library, sites.get(library), scratch, shlex.split(args.daemon))
                baseline = peak if baseline is None else baseline
                print(f"  {library:12} {peak:6.1f} MB ({peak - baseline:+.1f} MB; target <= 80 MB)")

    if args.wheels:
        print(f"\n== wheels on PyPI (pip download --only-binary :all: into {args.wheels}) ==")
        print("\n".join(list_wheels(args.wheels)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
