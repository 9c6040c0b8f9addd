"""tools/bench_config_libs.py's corpus stays a corpus of edge.config's rules: each bad
document is refused with one line naming a ported section's key, each good one accepted, and
the random documents are the TOML they claim to be. Otherwise the comparison with the
library ports would compare them on documents the config no longer treats as the bench says.
"""

from __future__ import annotations

import math
import tomllib

import pytest

from tools.bench_config_libs import (
    BAD_DOCUMENTS,
    GOOD_DOCUMENTS,
    code_lines,
    demo_document,
    make_fixtures,
    outcome,
    random_documents,
    to_toml,
)
from tools.config_ports import reference

pytestmark = pytest.mark.integration  # files and folders, like tests/test_config.py


@pytest.fixture()
def fixtures(tmp_path):
    make_fixtures(tmp_path)
    return tmp_path


@pytest.mark.parametrize("text", BAD_DOCUMENTS)
def test_each_bad_document_is_refused_naming_a_ported_key(fixtures, text):
    result = outcome(reference.load, text, fixtures)
    assert result.startswith("config key '"), result
    section = result.split("'")[1].split(".")[0].split("[")[0]
    assert section in (*reference.PORTED_SECTIONS, "mqttt"), result
    assert "\n" not in result


@pytest.mark.parametrize("text", [*GOOD_DOCUMENTS, demo_document()])
def test_each_good_document_is_accepted(fixtures, text):
    result = outcome(reference.load, text, fixtures)
    assert result.startswith("{"), result


def test_random_documents_are_the_tables_they_were_built_from():
    documents = random_documents(200)
    assert len(set(documents)) > 150  # seeded, but varied
    assert documents == random_documents(200)  # and the same every run
    for text in documents:
        tables = tomllib.loads(text)
        assert to_toml(tables) == text or any(
            isinstance(value, float) and math.isnan(value) for table in tables.values() for value in table.values()
        )


def test_code_lines_skip_blanks_comments_and_docstrings(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('"""Doc\nstring."""\n\n# comment\nx = 1\n\n\nclass ASection:\n    """Doc."""\n\n    a: int = 1\n')
    assert code_lines(path) == (2, 1)
