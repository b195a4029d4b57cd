"""Hostile image files, made cheaply: a huge PNG (a decompression bomb) and a truncated JPEG."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def huge_png(path: Path, width: int = 20000, height: int = 12000) -> Path:
    """A valid black 1-bit PNG of ``width`` x ``height`` (240 megapixels by default) in ~0.3 MB, written
    without ever holding its pixels: Pillow decodes it only if asked to, and refuses it by default."""
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    chunks = _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def truncated_jpeg(path: Path, size=(96, 128), keep: float = 0.5) -> Path:
    """A real JPEG of noise, cut after ``keep`` of its bytes: its header is intact, so Pillow's
    ``verify()`` passes it, but decoding its pixels fails ("image file is truncated")."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format="JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
