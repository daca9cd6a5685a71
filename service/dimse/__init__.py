"""The DIMSE edge (PS3.7, PS3.8): the archive reached by modalities and PACS over DICOM's own
protocol, beside the HTTP views and into the same archive: C-ECHO, C-STORE through STOW-RS's
ingest, C-FIND through QIDO-RS's search, C-MOVE and C-GET through WADO-RS's conversions. pynetdicom carries the associations, PDUs and DIMSE
messages; nothing here speaks PDUs. No Flask: the listener runs in a process of its own
(``dicomweb dimse``), made from the same configuration as the app."""
from __future__ import annotations

import socket


def accepts_connections(bind: str, timeout: float = 1.0) -> bool:
    """Whether the listener bound to ``bind`` (host:port) takes a TCP connection (for /ready): a
    wildcard address is asked on loopback."""
    host, _, port = bind.rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False
