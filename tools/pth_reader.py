"""Read a PyTorch ``.pth`` state dict into numpy arrays, without torch and without trusting it.

A ``.pth`` file is a pickle, and unpickling runs whatever callables the file names, so a
plain ``torch.load`` of a downloaded checkpoint is arbitrary code execution. This reader
uses a restricted unpickler that resolves exactly the globals a tensor state dict needs
(an ``OrderedDict``, the tensor rebuild function and the typed storage classes, each mapped
to a local stand-in) and refuses everything else. Tensors are rebuilt from the raw storage
bytes with numpy.

Both on-disk layouts written by ``torch.save`` are understood:

* the zip layout (torch >= 1.6): ``<archive>/data.pkl`` plus one ``<archive>/data/<key>``
  member of raw little-endian bytes per storage;
* the legacy layout (upstream's checkpoints were saved this way): five consecutive
  pickles/blobs in one stream - magic number, protocol version, system info, the state dict
  pickle, the list of storage keys - followed by each storage as an int64 element count and
  its raw bytes, in the order of that list.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

# torch's storage class names -> the numpy dtype of their elements (little-endian on disk).
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}

_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001


class CheckpointError(ValueError):
    """The file is not a readable tensor state dict; the message names the file."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a torch storage class: only its element dtype matters here."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by the pickle; its bytes are read after the pickle (legacy layout)."""

    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """Arguments of ``torch._utils._rebuild_tensor_v2``, resolved once storages are loaded."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused) -> _TensorRef:
    # The trailing arguments (requires_grad, backward hooks, metadata) mean nothing to numpy.
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    return _TensorRef(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that knows only the handful of globals a tensor state dict uses."""

    def __init__(self, file: BinaryIO, legacy: bool) -> None:
        super().__init__(file)
        self._legacy = legacy
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid):
        if not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        if self._legacy:
            # ('storage', storage type, key, location, numel, view metadata)
            _, storage_type, key, _location, numel, view = pid
            if view is not None:
                raise pickle.UnpicklingError("storage views are not supported")
        else:
            # ('storage', storage type, key, location, numel)
            _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
        ref = self.storages.setdefault(str(key), _StorageRef(str(key), storage_type.dtype, int(numel)))
        return ref


def _materialize(tensor: _TensorRef, buffers: dict[str, np.ndarray]) -> np.ndarray:
    """A writable C-contiguous copy of the tensor's (possibly strided) view of its storage."""
    flat = buffers[tensor.storage.key]
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.shape, tensor.strides, strict=True))
    if tensor.offset < 0 or any(s < 0 for s in tensor.strides) or last >= flat.size:
        raise pickle.UnpicklingError(f"tensor extends past its storage {tensor.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :],
        shape=tensor.shape,
        strides=tuple(s * flat.itemsize for s in tensor.strides),
        writeable=False,
    )
    return np.array(view, order="C", copy=True)


def _flat_buffer(raw: bytes, ref: _StorageRef) -> np.ndarray:
    expected = ref.numel * ref.dtype.itemsize
    if len(raw) != expected:
        raise pickle.UnpicklingError(f"storage {ref.key} holds {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=ref.dtype).astype(ref.dtype.newbyteorder("="), copy=False)


def _load_zip(path: Path) -> tuple[object, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("zip checkpoint without exactly one data.pkl")
        prefix = pickles[0][: -len("data.pkl")]
        unpickler = _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), legacy=False)
        root = unpickler.load()
        buffers = {
            key: _flat_buffer(archive.read(f"{prefix}data/{key}"), ref) for key, ref in unpickler.storages.items()
        }
    return root, buffers


def _load_legacy(path: Path) -> tuple[object, dict[str, np.ndarray]]:
    with path.open("rb") as stream:
        if _RestrictedUnpickler(stream, legacy=True).load() != _LEGACY_MAGIC_NUMBER:
            raise pickle.UnpicklingError("not a torch checkpoint (bad magic number)")
        protocol = _RestrictedUnpickler(stream, legacy=True).load()
        if protocol != _LEGACY_PROTOCOL_VERSION:
            raise pickle.UnpicklingError(f"unsupported legacy protocol version {protocol!r}")
        sys_info = _RestrictedUnpickler(stream, legacy=True).load()
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise pickle.UnpicklingError("only little-endian checkpoints are supported")
        unpickler = _RestrictedUnpickler(stream, legacy=True)
        root = unpickler.load()
        storage_keys = _RestrictedUnpickler(stream, legacy=True).load()
        buffers: dict[str, np.ndarray] = {}
        for key in storage_keys:
            ref = unpickler.storages.get(str(key))
            if ref is None:
                raise pickle.UnpicklingError(f"storage {key} is not used by any tensor")
            # Each storage is prefixed by its element count as a little-endian int64.
            numel = int.from_bytes(stream.read(8), "little", signed=True)
            if numel != ref.numel:
                raise pickle.UnpicklingError(f"storage {key} has {numel} elements, pickle says {ref.numel}")
            buffers[ref.key] = _flat_buffer(stream.read(numel * ref.dtype.itemsize), ref)
    return root, buffers


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return the tensors of the state dict in ``path`` as ``{name: array}``.

    Arrays keep the tensor's shape and dtype (float32 weights, int64 ``num_batches_tracked``
    scalars as 0-d arrays), in the file's key order. Raises ``CheckpointError`` with the
    file name for a missing file, an unknown format, or any global other than those a
    tensor state dict needs.
    """
    path = Path(path)
    try:
        root, buffers = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable tensor state dict ({error})") from None
    if not isinstance(root, dict):
        raise CheckpointError(f"{path}: top-level object is {type(root).__name__}, expected a state dict")
    state: dict[str, np.ndarray] = {}
    for name, value in root.items():
        if not isinstance(value, _TensorRef):
            raise CheckpointError(f"{path}: entry {name!r} is {type(value).__name__}, expected a tensor")
        try:
            state[str(name)] = _materialize(value, buffers)
        except (pickle.UnpicklingError, KeyError) as error:
            raise CheckpointError(f"{path}: entry {name!r} cannot be rebuilt ({error})") from None
    return state
