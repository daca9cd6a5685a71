"""Transfer syntaxes and the conversions between them.

``can_transcode`` says whether an instance stored in one syntax can be sent in
another; ``transcode`` does it: re-encoding between uncompressed syntaxes, and
decompressing encapsulated pixel data to Explicit or Implicit VR Little Endian.
Compressing, and recompressing to another codec, are not done yet.
"""
from __future__ import annotations

from typing import BinaryIO

from . import decompress, uncompressed
from .syntaxes import UNCOMPRESSED


def can_transcode(source: str, target: str) -> bool:
    return source == target or uncompressed.can_convert(source, target) or decompress.can_decompress(source, target)


def transcode(fp: BinaryIO, target: str, source: str) -> bytes:
    """Re-encode the seekable Part 10 file ``fp``, stored in ``source``, in ``target``.

    Raises ValueError when that is impossible (no codec, or undecodable data).
    """
    if source in UNCOMPRESSED:
        return uncompressed.convert(fp, target)
    if decompress.can_decompress(source, target):
        return decompress.decompress(fp, target)
    raise ValueError(f"cannot convert {source} to {target}")
