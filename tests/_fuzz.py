"""A seeded generator of hostile label inputs: mutated PNG/TIFF/JPEG bytes and odd arrays.

Each case is a pure function of (seed, index), so a failure is reproduced by its index alone.  Mutations start
from valid label files of every mode and then flip bytes, truncate, splice, repeat chunks or rewrite the PNG
header (with a correct CRC, so that decoders get past the checksum and meet the odd values).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _valid_files(rng: np.random.Generator) -> list[bytes]:
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    raw = rng.integers(0, 12, (height, width)).astype(np.uint8)
    images = [
        (Image.fromarray(raw, "L"), "PNG"),
        (Image.fromarray(raw, "P"), "PNG"),
        (Image.fromarray(raw.astype(np.uint16)), "PNG"),
        (Image.fromarray(raw.astype(np.int32)), "TIFF"),
        (Image.merge("LA", (Image.fromarray(raw, "L"), Image.fromarray(raw, "L"))), "PNG"),
        (Image.fromarray(np.stack([raw * 20] * 3, axis=2)), "PNG"),
        (Image.fromarray(raw, "L"), "JPEG"),
        (Image.fromarray(raw, "L"), "BMP"),
    ]
    files = []
    for image, kind in images:
        buffer = io.BytesIO()
        image.save(buffer, kind)
        files.append(buffer.getvalue())
    return files


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _rewrite_png_header(data: bytes, rng: np.random.Generator) -> bytes:
    if not data.startswith(b"\x89PNG") or len(data) < 33:
        return data
    width, height = (int(v) for v in rng.choice([0, 1, 7, 2 ** 16, 2 ** 31 - 1, 2 ** 32 - 1], 2))
    depth = int(rng.choice([1, 2, 4, 8, 16, 3, 0]))
    colour = int(rng.choice([0, 2, 3, 4, 6, 1, 7]))
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(rng.integers(0, 2)))
    return data[:8] + _png_chunk(b"IHDR", header) + data[33:]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    kind = int(rng.integers(0, 7))
    buffer = bytearray(data)
    if kind == 0 and buffer:  # flip a few bytes
        for position in rng.integers(0, len(buffer), int(rng.integers(1, 8))):
            buffer[position] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        buffer = buffer[: int(rng.integers(0, max(1, len(buffer))))]
    elif kind == 2:  # insert random bytes
        position = int(rng.integers(0, len(buffer) + 1))
        buffer[position:position] = rng.integers(0, 256, int(rng.integers(1, 64))).astype(np.uint8).tobytes()
    elif kind == 3:  # repeat a slice (duplicated chunks)
        start = int(rng.integers(0, max(1, len(buffer))))
        buffer += buffer[start: start + int(rng.integers(1, 200))]
    elif kind == 4:
        buffer = bytearray(_rewrite_png_header(bytes(buffer), rng))
    elif kind == 5:  # random bytes behind a real signature
        buffer = bytearray(buffer[:8]) + rng.integers(0, 256, int(rng.integers(0, 300))).astype(np.uint8).tobytes()
    # kind 6: unchanged (the valid file must work)
    return bytes(buffer)


def fuzz_file(seed: int, index: int) -> bytes:
    rng = np.random.default_rng([seed, index])
    files = _valid_files(rng)
    data = files[int(rng.integers(0, len(files)))]
    for _ in range(int(rng.integers(1, 3))):
        data = mutate(data, rng)
    return data


def fuzz_array(seed: int, index: int) -> np.ndarray:
    """Arrays a Python caller might pass as a label: odd shapes, dtypes, signs, NaN, empty."""
    rng = np.random.default_rng([seed, index, 1])
    ndim = int(rng.choice([0, 1, 2, 2, 2, 3]))
    shape = tuple(int(v) for v in rng.integers(0, 6 if ndim == 3 else 40, ndim))
    if ndim == 3:
        shape = shape[:2] + (int(rng.choice([1, 2, 3, 4, 5])),)
    dtype = rng.choice(["uint8", "int64", "int32", "float32", "float64", "bool", "uint16"])
    values = rng.integers(-3, 300, shape) if dtype != "bool" else rng.integers(0, 2, shape)
    array = values.astype(dtype)
    if dtype.startswith("float") and array.size and rng.random() < 0.3:
        array.flat[0] = np.nan
    return array
