"""Tags of DICOM JSON objects by keyword: ``KEY.RetrieveURL`` is ``"00081190"``, so that code
names the attribute it means instead of writing its tag as a string (PS3.18 F.2)."""
from __future__ import annotations

from functools import lru_cache

from pydicom.datadict import tag_for_keyword


class _Keys:
    def __getattr__(self, keyword: str) -> str:
        return _key(keyword)


@lru_cache(maxsize=None)
def _key(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise AttributeError(f"{keyword} is not a DICOM keyword")
    return f"{tag:08X}"


KEY = _Keys()
