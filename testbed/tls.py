"""A throwaway PKI for DICOM TLS tests, made with the openssl command: a CA, the listener's
certificate (localhost, 127.0.0.1), a peer's certificate signed by the CA, and a stranger's
signed by a CA the listener does not trust. EC P-256 keys, valid one day."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    peer_cert: Path
    peer_key: Path
    stranger_cert: Path
    stranger_key: Path


def _openssl(*arguments: str) -> None:
    subprocess.run(["openssl", *arguments], check=True, capture_output=True, timeout=60)


def _key_and_request(directory: Path, name: str, subject: str) -> tuple[Path, Path]:
    key, request = directory / f"{name}.key", directory / f"{name}.csr"
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
             "-out", str(request), "-subj", subject)
    return key, request


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}")
    return cert, key


def _signed(directory: Path, name: str, subject: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, request = _key_and_request(directory, name, subject)
    cert, extfile = directory / f"{name}.pem", directory / f"{name}.ext"
    extfile.write_text(extensions + "\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-days", "1", "-out", str(cert), "-extfile", str(extfile))
    return cert, key


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other_ca = _ca(directory, "test-ca"), _ca(directory, "other-ca")
    server = _signed(directory, "listener", "/CN=localhost", ca,
                     "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    peer = _signed(directory, "peer", "/CN=MODALITY1", ca, "extendedKeyUsage=clientAuth")
    stranger = _signed(directory, "stranger", "/CN=STRANGER", other_ca, "extendedKeyUsage=clientAuth")
    return Pki(ca[0], *server, *peer, *stranger)
