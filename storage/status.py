"""Status codes of the Storage Service, as named data (PS3.4 Annex B.2.3, PS3.18 §10.5.3)."""
from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    """Failure Reason (0008,1197) values used in a STOW-RS FailedSOPSequence."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111      # PS3.7 C.4: same SOP Instance UID, other content
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900            # data set does not match SOP class / request study
    CANNOT_UNDERSTAND = 0xC000
