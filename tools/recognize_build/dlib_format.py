"""A reader of dlib's serialization format (dlib/serialize.h), written here so the build needs
no dlib: only the primitives the two face models use.

- integer: one control byte (low 4 bits: how many value bytes follow, 1..8; bit 0x80: the
  value is negative), then the magnitude, little-endian;
- float/double: two integers, mantissa and exponent, value = mantissa * 2**exponent (an
  exponent of 32000/32001/32002 is +inf/-inf/NaN). dlib also reads an older ASCII form,
  which it tells apart by bits 0x70 of the first byte; neither model file uses it, so it is
  refused;
- bool: the byte '0' or '1'; string: a length (integer), then the bytes;
- std::vector: a length, then the items; matrix<T,0,1>: -rows, -cols (negative: the
  current format), then the items row by row;
- dnn tensor: version 2, num_samples, k, nr, nc, then little-endian IEEE float32s (the one
  place dlib writes raw floats); alias_tensor: version 1 and the four sizes, no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import numpy as np

T = TypeVar("T")

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}


class DlibFormatError(Exception):
    """The bytes are not what the reader expected; the message names the offset."""


class DlibReader:
    """Sequential reader over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.offset = 0

    def error(self, problem: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {problem} at byte {self.offset}")

    def _take(self, count: int) -> bytes:
        end = self.offset + count
        if end > len(self.data):
            raise self.error(f"truncated: {count} more bytes needed")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    @property
    def at_end(self) -> bool:
        return self.offset == len(self.data)

    def integer(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            self.offset -= 1  # name the offending byte's own offset
            raise self.error(f"not an integer control byte (0x{control:02x})")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def real(self) -> float:
        """A float or double in dlib's portable form (mantissa, exponent)."""
        if self.offset < len(self.data) and self.data[self.offset] & 0x70:
            raise self.error("an ASCII floating-point value (dlib's pre-2013 format), not supported")
        mantissa = self.integer()
        exponent = self.integer()
        if exponent in _SPECIAL_EXPONENTS:
            return _SPECIAL_EXPONENTS[exponent]
        return math.ldexp(mantissa, exponent)

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise self.error(f"not a bool ({byte!r})")
        return byte == b"1"

    def string(self) -> str:
        return self._take(self.integer()).decode("latin-1")

    def expect_string(self, *allowed: str) -> str:
        found = self.string()
        if found not in allowed:
            raise self.error(f"expected {' or '.join(map(repr, allowed))}, found {found!r}")
        return found

    def expect_integer(self, *allowed: int) -> int:
        found = self.integer()
        if found not in allowed:
            raise self.error(f"expected version {' or '.join(map(str, allowed))}, found {found}")
        return found

    def vector(self, item: Callable[[DlibReader], T]) -> list[T]:
        return [item(self) for _ in range(self.integer())]

    def column_vector(self) -> np.ndarray:
        """matrix<float,0,1> -> (rows,) float32."""
        rows, cols = self.integer(), self.integer()
        if rows >= 0 or cols >= 0:
            raise self.error(f"matrix in the old (positive-size) format ({rows}x{cols}), not supported")
        if cols != -1:
            raise self.error(f"expected a column vector, found {-rows}x{-cols}")
        return np.array([self.real() for _ in range(-rows)], dtype=np.float32)

    def tensor(self) -> np.ndarray:
        """A dnn resizable_tensor -> (num_samples, k, nr, nc) float32 (possibly empty)."""
        self.expect_integer(2)
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        self.expect_integer(1)
        num_samples, k, nr, nc = (self.integer() for _ in range(4))
        return num_samples, k, nr, nc
