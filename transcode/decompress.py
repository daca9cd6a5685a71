"""Decompression of encapsulated pixel data to native little endian, with pydicom's decoders.

pydicom picks a plug-in per transfer syntax among those installed: GDCM
(``python-gdcm``: JPEG lossless, JPEG-LS, JPEG 2000), Pillow (JPEG baseline,
JPEG 2000) and its own RLE decoder. YCbCr JPEG data comes out as RGB, and the
data set says so (PhotometricInterpretation), as PS3.5 §8.2.1 expects of
decompressed YBR_FULL_422.
"""
from __future__ import annotations

import io
import warnings
from typing import BinaryIO

import pydicom
from pydicom import dcmwrite

from .syntaxes import IMPLICIT_VR_LITTLE_ENDIAN, TRANSFER_SYNTAXES
from .uncompressed import TARGETS


def can_decompress(source: str, target: str) -> bool:
    syntax = TRANSFER_SYNTAXES.get(source)
    return syntax is not None and syntax.compressed and not source.startswith("1.2.840.10008.1.2.4.1") \
        and target in TARGETS and target != "1.2.840.10008.1.2.1.99"


def decompress(fp: BinaryIO, target: str) -> bytes:
    """The Part 10 file ``fp`` with its pixel data decoded, written in ``target``.

    Raises ValueError when no installed decoder can read the data.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp)
        try:
            ds.decompress(generate_instance_uid=False)   # the same instance, decoded: same UID
        except Exception as exc:   # each plug-in fails in its own way
            raise ValueError(f"the pixel data could not be decoded: {exc}") from None
        if target == IMPLICIT_VR_LITTLE_ENDIAN:
            ds.file_meta.TransferSyntaxUID = target
        out = io.BytesIO()
        try:
            dcmwrite(out, ds, implicit_vr=target == IMPLICIT_VR_LITTLE_ENDIAN, little_endian=True,
                     enforce_file_format=True)
        except Exception as exc:   # values pydicom read but cannot write back (damaged files)
            raise ValueError(f"the decoded data set could not be written: {exc}") from None
        return out.getvalue()
