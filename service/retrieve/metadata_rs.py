"""WADO-RS metadata: study, series and instance metadata (PS3.18 §10.4.1.1.2, Annex F).

Each instance's DICOM JSON was made at ingest; a study's metadata is their
concatenation, streamed, with BulkDataURIs made absolute for this request's
base URL. An ETag over the instances' content digests answers If-None-Match
with 304; gzip is used when the client accepts it.
"""
from __future__ import annotations

import hashlib
import zlib
from typing import Iterable, Iterator

import orjson
from flask import Response, request

from storage.metadata import with_base_url

from ..wire import multipart
from ..access.deidentify import deidentify_model
from ..wire.dicom_xml import json_to_xml
from ..wire.media import DICOM_JSON, DICOM_XML
from ..web import anonymize_seed, archive, base_url, held_or_relayed, require_uids, wants_xml


def retrieve_metadata(study: str, series: str | None = None, instance: str | None = None) -> Response:
    require_uids(study=study, series=series, instance=instance)
    as_xml = wants_xml("metadata")
    seed = anonymize_seed(study, request.args.get("anonymize"))
    anonymized = (lambda model: deidentify_model(model, seed)) if seed is not None and not as_xml else None
    found, relayed = held_or_relayed(study, series, instance, seed is not None, anonymized)
    if relayed is not None:
        return relayed
    root = base_url()
    gzipped = "gzip" in request.accept_encodings
    tag = hashlib.sha1("\n".join([root, "xml" if as_xml else "json", "gzip" if gzipped else "identity",
                                  seed or "", *(i.sha256 for i in found)]).encode()).hexdigest()
    etag = f'"{tag}"'
    # Weak comparison (RFC 9110 §13.1.2): proxies that compress mark the tag weak.
    if request.if_none_match.contains_weak(tag):
        return Response(status=304, headers={"ETag": etag})
    texts = (with_base_url(text, root) for text in archive().metadata(found))
    if seed is not None:
        texts = (_deidentified(text, seed) for text in texts)
    if as_xml:
        body, content_type = multipart.related(
            (multipart.Part({"Content-Type": DICOM_XML}, [json_to_xml(orjson.loads(t))]) for t in texts), DICOM_XML)
    else:
        body, content_type = _json_array(texts), DICOM_JSON
    headers = {"ETag": etag, "Vary": "Accept, Accept-Encoding", "Cache-Control": "no-cache"}
    if gzipped:
        body = _gzip(body)
        headers["Content-Encoding"] = "gzip"
    return Response(body, content_type=content_type, headers=headers, direct_passthrough=True)


def _deidentified(text: bytes, seed: str) -> bytes:
    return orjson.dumps(deidentify_model(orjson.loads(text), seed))


def _json_array(texts: Iterable[bytes]) -> Iterator[bytes]:
    separator = b"["
    for text in texts:
        yield separator + text
        separator = b","
    yield b"]" if separator == b"," else b"[]"


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)   # 31: gzip header and trailer
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()
