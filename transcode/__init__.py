"""Transfer syntaxes and the conversions between them.

``can_transcode`` says whether an instance stored in one syntax can be sent in
another; ``transcode`` does it. Only conversions between uncompressed syntaxes
exist so far; compressed data can be sent as stored.
"""
from __future__ import annotations

from typing import BinaryIO

from . import uncompressed


def can_transcode(source: str, target: str) -> bool:
    return source == target or uncompressed.can_convert(source, target)


def transcode(fp: BinaryIO, target: str) -> bytes:
    """Re-encode the seekable Part 10 file ``fp`` in ``target``; ValueError if impossible."""
    return uncompressed.convert(fp, target)
