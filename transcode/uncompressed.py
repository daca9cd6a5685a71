"""Conversion between the uncompressed transfer syntaxes, with pydicom.

Implicit VR, Explicit VR (little or big endian) and Deflated data sets are
re-encoded; values stay equal. Big endian input needs its binary values
byte-swapped by word size, which pydicom leaves to the caller.
"""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom import dcmwrite

from .syntaxes import EXPLICIT_VR_BIG_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, UNCOMPRESSED

# Word sizes of the binary VRs whose values depend on byte order (PS3.5 §7.3).
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Targets pydicom can write; Explicit VR Big Endian was retired in PS3.5 2004 and is not offered.
TARGETS = frozenset(UNCOMPRESSED - {EXPLICIT_VR_BIG_ENDIAN})


def can_convert(source: str, target: str) -> bool:
    return source in UNCOMPRESSED and target in TARGETS


def convert(fp: BinaryIO, target: str) -> bytes:
    """Read a Part 10 file in an uncompressed syntax and re-encode it in ``target``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp)
        source = str(ds.file_meta.TransferSyntaxUID)
        if not can_convert(source, target):
            raise ValueError(f"cannot convert {source} to {target}")
        if source == EXPLICIT_VR_BIG_ENDIAN:
            _swap_to_little_endian(ds)
        ds.file_meta.TransferSyntaxUID = target
        out = io.BytesIO()
        dcmwrite(out, ds, implicit_vr=target == IMPLICIT_VR_LITTLE_ENDIAN, little_endian=True,
                 force_encoding=True)
        return out.getvalue()


def _swap_to_little_endian(ds: pydicom.Dataset) -> None:
    bits = int(ds.get("BitsAllocated", 16) or 16)
    for elem in ds.iterall():
        size = _WORD_SIZE.get(elem.VR)
        if elem.tag == 0x7FE00010 and bits > 8:
            size = bits // 8   # pixel data samples are swapped by their own size, as pydicom reads them
        if size and isinstance(elem.value, (bytes, bytearray)) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, dtype=f">u{size}").astype(f"<u{size}").tobytes()
