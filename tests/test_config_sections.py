"""The config sections live beside the stages they configure (edge/<stage>/settings.py); edge.config
only reads the file and lists them. What that layout promises: each section is declared once, in
its stage's settings module; the loader takes a section declared anywhere with one line; reading
a config loads no numpy; the name that left edge.config still resolves, with a warning."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import edge.config
from edge.common.config_rules import (
    REQUIRED,
    ConfigContext,
    ConfigError,
    Integer,
    KeySection,
    OptionSection,
    Section,
    key,
    section,
)
from edge.common.options import OptionError
from edge.config import OPTION_SECTIONS, SECTIONS, Config, parse_config

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def declarations() -> dict[str, Section]:
    return {item.name: item.metadata["section"] for item in dataclasses.fields(Config) if "section" in item.metadata}


def test_each_section_is_declared_in_its_stages_settings_module():
    owners: dict[str, str] = {}
    for name, declared in declarations().items():
        keys = declared.keys if isinstance(declared, KeySection) else declared.options
        owners[name] = keys.__module__
    assert owners.pop("device") == "edge.config"  # every stage shares it; the loader parses it first
    for name, module in owners.items():
        package, _, leaf = module.rpartition(".")
        assert leaf == "settings" and package.count(".") == 1, f"[{name}] is declared in {module}"
        assert (PROJECT_ROOT / Path(*package.split("."))).is_dir()
    # The old names of the loader are the declarations, not copies.
    assert set(SECTIONS) | set(OPTION_SECTIONS) == set(declarations())
    assert all(SECTIONS[name] is declarations()[name].keys for name in SECTIONS)


@dataclass(frozen=True)
class ProbeConfig:
    low: int = key(Integer(0, 10), 1)
    high: int = key(Integer(0, 10), 5)


def check_probe(probe: ProbeConfig, table: dict[str, Any], context: ConfigContext) -> ProbeConfig:
    if probe.high < probe.low:
        raise ConfigError("probe.high", REQUIRED, "probe.high >= probe.low")
    return probe


def test_a_section_declared_outside_the_loader_parses_with_its_rules_and_its_check(tmp_path):
    """What a new stage writes: a dataclass of keys and its check; the whole configuration then
    takes it as one field."""

    @dataclass(frozen=True)
    class WithProbe(Config):
        probe: ProbeConfig = section(KeySection(ProbeConfig, check=check_probe))

    probe_field = next(item for item in dataclasses.fields(WithProbe) if item.name == "probe")
    declared = probe_field.metadata["section"]
    context = ConfigContext(base_dir=tmp_path, environ={}, hostname="pi")
    assert declared.parse("probe", {"low": 2}, context) == ProbeConfig(low=2, high=5)
    assert WithProbe(device=parse_config({}, tmp_path, environ={}, hostname="pi").device).probe == ProbeConfig()
    with pytest.raises(ConfigError) as caught:
        declared.parse("probe", {"lwo": 2}, context)
    assert str(caught.value) == "config key 'probe.lwo' is not allowed (unknown key in [probe]; did you mean 'low'?)"
    with pytest.raises(ConfigError) as caught:
        declared.parse("probe", {"low": 7}, context)
    assert str(caught.value) == "config key 'probe.high' is missing (probe.high >= probe.low)"
    with pytest.raises(ConfigError) as caught:
        declared.parse("probe", {"low": 11}, context)
    assert str(caught.value) == "config key 'probe.low': 11 is not allowed (an integer 0-10)"


def test_an_option_section_reports_its_own_check_as_a_config_error(tmp_path):
    declared = declarations()["motion"]
    assert isinstance(declared, OptionSection)
    with pytest.raises(ConfigError) as caught:
        declared.parse("motion", {"threshold": 0}, ConfigContext(base_dir=tmp_path, environ={}, hostname=None))
    assert str(caught.value) == "config key 'motion.threshold': 0 is not allowed (an integer 1-255 (gray levels))"


@pytest.mark.integration  # a fresh interpreter
def test_reading_a_config_loads_no_numpy(tmp_path):
    """fleet, forget and check-config start without numpy: the sections it reads are declarations."""
    config = tmp_path / "edge-face.toml"
    config.write_text('[device]\nid = "pi"\n[scene]\nmasks = [[[0, 0], [0.5, 0], [0.5, 0.5]]]\n', encoding="utf-8")
    probe = (
        "import sys\n"
        "from edge.config import load_config\n"
        "from edge.ops.check_config import check_config_main\n"
        f"config = load_config({str(config)!r})\n"
        "print(len(config.scene.masks), sorted(m for m in ('numpy', 'PIL') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == "1 []\n"


def test_check_config_main_left_edge_config_and_still_resolves_there_with_a_warning():
    from edge.ops.check_config import check_config_main

    namespace: dict[str, object] = {}
    with pytest.warns(
        DeprecationWarning,
        match=r"^edge\.config\.check_config_main moved to edge\.ops\.check_config\.check_config_main; import it from there$",
    ) as caught:
        exec(compile("from edge.config import check_config_main", "caller.py", "exec"), namespace)
    assert namespace["check_config_main"] is check_config_main
    assert caught[0].filename == "caller.py"
    with pytest.raises(AttributeError, match=r"^module 'edge\.config' has no attribute 'no_such_name'$"):
        getattr(edge.config, "no_such_name")  # noqa: B009


def test_an_option_section_with_paths_reads_them_from_the_config_folder(tmp_path):
    def read(table: dict[str, Any], name: str, base_dir: Path) -> Path:
        if not isinstance(table.get("file", ""), str):
            raise OptionError(f"{name}.file", table["file"], "a path string")
        return base_dir / table.get("file", "default.json")

    declared = OptionSection(Path, read, with_base_dir=True)
    context = ConfigContext(base_dir=tmp_path, environ={}, hostname=None)
    assert declared.parse("probe", {"file": "g.json"}, context) == tmp_path / "g.json"
    with pytest.raises(ConfigError) as caught:
        declared.parse("probe", {"file": 5}, context)
    assert str(caught.value) == "config key 'probe.file': 5 is not allowed (a path string)"
