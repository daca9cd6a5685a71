"""Encapsulated documents rendered (PS3.18 §10.4.1.1.3): ``…/rendered`` of an Encapsulated PDF or
CDA instance is the document itself, byte for byte, as its media type, with Range."""
from __future__ import annotations

import io

import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid

from testbed.messages import multipart_body, stow_headers

PDF_CLASS, CDA_CLASS = "1.2.840.10008.5.1.4.1.1.104.1", "1.2.840.10008.5.1.4.1.1.104.2"


def a_pdf() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (200, 100), (200, 30, 30)).save(out, "PDF")
    data = out.getvalue()
    return data if len(data) % 2 else data + b"\n"   # odd: the stored value gets a pad byte


def document_instance(document: bytes, sop_class: str = PDF_CLASS, mime: str | None = "application/pdf",
                      syntax: str = ExplicitVRLittleEndian) -> tuple[str, str, str, bytes]:
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = sop_class, sop, study, series
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "P-DOC", "DOC"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    if mime:
        ds.MIMETypeOfEncapsulatedDocument = mime
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID, ds.file_meta.MediaStorageSOPClassUID = syntax, sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return study, series, sop, out.getvalue()


def store(client, data: bytes) -> None:
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code == 200, r.get_data()


def rendered(study, series, sop) -> str:
    return f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_a_pdf_renders_as_itself(client, syntax):
    pdf = a_pdf()
    study, series, sop, data = document_instance(pdf, syntax=syntax)
    store(client, data)
    for accept in ("application/pdf", "*/*", "application/*", None):
        r = client.get(rendered(study, series, sop), headers={"Accept": accept} if accept else {}, buffered=True)
        assert r.status_code == 200 and r.mimetype == "application/pdf"
        assert r.get_data() == pdf, "byte for byte, without the pad byte"
    r = client.get(rendered(study, series, sop), headers={"Accept": "application/pdf", "Range": "bytes=0-7"},
                   buffered=True)
    assert r.status_code == 206 and r.get_data() == pdf[:8] and r.headers["Content-Range"] == f"bytes 0-7/{len(pdf)}"


def test_a_document_larger_than_the_read_limit_is_found_not_loaded(client):
    big = a_pdf() + b"%" + b"x" * (3 << 20) + b"\n"     # a 3 MB comment after %%EOF: still the same bytes
    big = big if len(big) % 2 else big + b"\n"
    study, series, sop, data = document_instance(big)
    store(client, data)
    r = client.get(rendered(study, series, sop), buffered=True)
    assert r.status_code == 200 and r.get_data() == big


def test_a_cda_as_stored_is_an_attachment_of_octet_stream(client):
    """XML is an active type (XHTML or SVG inside it runs): the document itself, byte for byte,
    to be saved, not shown on our origin (service.content_policy)."""
    cda = b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>Report</title></ClinicalDocument>'
    study, series, sop, data = document_instance(cda, CDA_CLASS, mime=None)
    store(client, data)
    for accept in ("text/xml", "application/octet-stream", "*/*"):
        r = client.get(rendered(study, series, sop), headers={"Accept": accept}, buffered=True)
        assert r.status_code == 200 and r.mimetype == "application/octet-stream" and r.get_data() == cda
        assert r.headers["Content-Disposition"] == f'attachment; filename="{sop}"'
        assert r.headers["X-Content-Type-Options"] == "nosniff" and "sandbox" in r.headers["Content-Security-Policy"]


ACTIVE = [
    ("text/html", b"<html><body><script>document.title='PWNED'</script></body></html>"),
    ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg"><script>document.title="PWNED"</script></svg>'),
    ("application/xhtml+xml", b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>'),
    ("text/javascript", b"fetch('/dicom-web/studies')"),
    ("application/x-unknown", b"MZ\x90\x00"),
]


@pytest.mark.parametrize("mime, document", ACTIVE)
@pytest.mark.parametrize("sop_class", [PDF_CLASS, CDA_CLASS, "1.2.840.10008.5.1.4.1.1.104.3"])
def test_a_document_of_an_active_type_is_never_sent_as_it(client, mime, document, sop_class):
    """A peer with store permission names the MIME Type: HTML, SVG, XHTML, script or anything not
    known to be passive is sent as an attachment of application/octet-stream, sandboxed; it was
    sent as itself, with no policy, on the viewer's origin."""
    study, series, sop, data = document_instance(document, sop_class, mime=mime)
    store(client, data)
    for accept in (mime, "*/*", None):
        r = client.get(rendered(study, series, sop), headers={"Accept": accept} if accept else {}, buffered=True)
        assert r.status_code == 200 and r.get_data() == document
        assert r.mimetype == "application/octet-stream" and r.headers["Content-Disposition"].startswith("attachment")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")


def test_a_pdf_is_a_pdf_sandboxed(client):
    study, series, sop, data = document_instance(a_pdf())
    store(client, data)
    r = client.get(rendered(study, series, sop), buffered=True)
    assert r.mimetype == "application/pdf" and "Content-Disposition" not in r.headers
    assert r.headers["Content-Security-Policy"].startswith("sandbox; default-src 'none'")


@pytest.mark.parametrize("query, headers, status", [
    ("", {"Accept": "image/jpeg"}, 406),
    ("?anonymize=true", {"Accept": "application/pdf"}, 406),
])
def test_what_a_document_cannot_be_rendered_as(client, query, headers, status):
    study, series, sop, data = document_instance(a_pdf())
    store(client, data)
    assert client.get(rendered(study, series, sop) + query, headers=headers).status_code == status


def test_a_study_of_documents_has_no_image_to_render(client):
    study, series, sop, data = document_instance(a_pdf())
    store(client, data)
    assert client.get(f"/dicom-web/studies/{study}/rendered").status_code == 404
    assert client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/thumbnail").status_code == 404


CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <title>Discharge summary</title>
  <effectiveTime value="20240116083000"/>
  <recordTarget><patientRole><id extension="P-42" root="1.2.3"/><patient>
    <name><given>Jürgen</given><family>Müller</family></name>
    <administrativeGenderCode code="M"/><birthTime value="19600203"/></patient></patientRole></recordTarget>
  <author><assignedAuthor><assignedPerson><name><prefix>Dr</prefix><given>Ann</given><family>Smith</family></name>
  </assignedPerson></assignedAuthor></author>
  <component><structuredBody>
    <component><section><title>Findings</title>
      <text><paragraph>No <content styleCode="Bold">acute</content> findings.<br/>Second line.</paragraph>
        <list><item>Lungs clear</item><item>Heart normal &lt;script&gt;alert(1)&lt;/script&gt;</item></list>
        <table><thead><tr><th>Test</th><th>Value</th></tr></thead><tbody><tr><td>Hb</td><td>14 g/dL</td></tr></tbody></table>
        <linkHtml href="javascript:alert(2)">a link</linkHtml>
      </text>
      <component><section><title>Sub-finding</title><text>所見なし</text></section></component>
    </section></component>
  </structuredBody></component>
</ClinicalDocument>""".encode()


def test_a_cda_is_made_readable_as_html(client):
    from tests.test_reports import balanced

    study, series, sop, data = document_instance(CDA, CDA_CLASS, mime="text/xml")
    store(client, data)
    r = client.get(rendered(study, series, sop), headers={"Accept": "text/html"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.get_data(as_text=True)
    text = balanced(page)
    for expected in ("Discharge summary", "Jürgen Müller", "Dr Ann Smith", "2024-01-16 08:30:00", "P-42",
                     "Findings", "acute", "Lungs clear", "14 g/dL", "Sub-finding", "所見なし", "a link"):
        assert expected in text, expected
    assert "<script>" not in page and "javascript:" not in page and "styleCode" not in page and "href" not in page
    assert "<h3>Sub-finding</h3>" in page and "<td>Hb</td>" in page and "<li>Lungs clear</li>" in page
    latin = client.get(rendered(study, series, sop) + "?charset=ISO-8859-1", headers={"Accept": "text/html"})
    assert latin.headers["Content-Type"] == "text/html; charset=ISO-8859-1" and "Müller".encode("latin-1") in latin.data
    assert client.get(rendered(study, series, sop), headers={"Accept": "text/xml"}).get_data() == CDA
    for charset in ("idna", "undefined"):   # codecs that exist and write no page: 500s before
        r = client.get(rendered(study, series, sop) + f"?charset={charset}", headers={"Accept": "text/html"})
        assert r.status_code == 406 and charset in r.get_json()["message"]


@pytest.mark.parametrize("document", [b"not xml at all <", b'<?xml version="1.0"?><html/>',
                                      b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
                                      b'<ClinicalDocument xmlns="urn:hl7-org:v3">&a;</ClinicalDocument>'])
def test_what_is_not_a_cda_is_not_made_readable(client, document):
    study, series, sop, data = document_instance(document, CDA_CLASS, mime="text/xml")
    store(client, data)
    r = client.get(rendered(study, series, sop), headers={"Accept": "text/html"})
    assert r.status_code == 406 and "text/xml" in r.get_json()["message"]


def test_a_deeply_nested_cda_costs_a_bound():
    from transcode.cda import cda_html

    sections = "<component><section><title>s</title><text>" + "<content>" * 3000 + "deep" + "</content>" * 3000 \
        + "</text>" + "<component><section><title>t</title>" * 500 + "</section></component>" * 500 \
        + "</section></component>"
    page = cda_html(f'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><structuredBody>{sections}'
                    f"</structuredBody></component></ClinicalDocument>".encode())
    assert "deep" in page and page.count("<section>") <= 65
