"""Store the same small archive (20 studies) into a DICOMweb server, for search comparisons.

    python -m bench.small_archive --url http://127.0.0.1:8042/dicom-web [--key KEY]
"""
from __future__ import annotations

import argparse
import random

import requests

from testbed.synthetic import ct_instance
from pydicom.uid import generate_uid

from bench.catalog_fill import FAMILY, GIVEN

BOUNDARY = "small-archive"


def store_small_archive(url: str, key: str | None, studies: int = 20, seed: int = 3) -> int:
    rng = random.Random(seed)
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
               "Accept": "application/dicom+json", **({"Authorization": f"Bearer {key}"} if key else {})}
    stored = 0
    for s in range(studies):
        study = generate_uid()
        name = f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"
        date = f"{rng.randint(2015, 2025)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        parts = []
        for series_number in range(1, rng.randint(1, 4) + 1):
            series = generate_uid()
            modality = rng.choice(["CT", "MR", "US", "PT", "CR"])
            parts += [ct_instance(study, series, number=n, rows=16, columns=16, patient_name=name,
                                  patient_id=f"SMALL{s:03d}", series_number=series_number, Modality=modality,
                                  StudyDate=date, AccessionNumber=f"SA{s:05d}")
                      for n in range(1, rng.randint(2, 6))]
        body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                        for p in parts) + f"--{BOUNDARY}--\r\n".encode()
        r = requests.post(url.rstrip("/") + "/studies", data=body, headers=headers, timeout=60)
        r.raise_for_status()
        stored += len(parts)
    return stored


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key")
    args = parser.parse_args()
    print(store_small_archive(args.url, args.key), "instances stored")
