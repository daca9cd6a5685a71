"""Building DICOMweb resource URLs (pure)."""
from __future__ import annotations


def retrieve_url(base_url: str, study: str, series: str | None = None, instance: str | None = None) -> str:
    """PS3.18 §10.4.1 resource URL of a study, series or instance under ``base_url``."""
    url = f"{base_url.rstrip('/')}/studies/{study}"
    if series is not None:
        url += f"/series/{series}"
        if instance is not None:
            url += f"/instances/{instance}"
    return url
