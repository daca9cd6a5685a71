"""The data set of an instance up to its Pixel Data, read with pydicom (whose warnings about the
odd files real modalities write are not the peer's to see)."""
from __future__ import annotations

import warnings
from typing import BinaryIO

import pydicom

from storage import Archive, StoredInstance
from storage.dataset import DEFLATED


def read_header(fp: BinaryIO) -> pydicom.Dataset:
    """The data set before Pixel Data of the Part 10 file at ``fp``'s position; ``fp`` is
    rewound to where it was, so that the file can be read again whole."""
    start = fp.tell()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    fp.seek(start)
    return ds


def stored_header(archive: Archive, stored: StoredInstance) -> pydicom.Dataset:
    """The data set before Pixel Data of a stored instance (a deflated one inflated within the
    archive's bound); read by ranges of the blob, so that a large instance is not copied for it."""
    if stored.transfer_syntax_uid == DEFLATED:
        with archive.readable(stored) as (fp, _):
            return read_header(fp)
    with archive.ranged(stored) as fp:
        return read_header(fp)
