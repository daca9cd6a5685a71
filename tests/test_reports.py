"""Structured reports rendered for people: the content tree read from the stored DICOM JSON
(transcode.report, no HTTP), and ``…/rendered`` and WADO-URI serving it as HTML, text and PDF,
with charset, links to the referenced images that work, escaping, bounds and anonymisation."""
import io
import shutil
import subprocess
from html.parser import HTMLParser

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.conftest import TEST_FILES, in_ci, pydicom_test_files
from testbed.messages import multipart_body, read, stow_headers
from testbed.synthetic import ct_instance, measurement_report
from transcode.report import MAX_DEPTH, MAX_ITEMS, as_html, as_text, person, read_report

NO_LINK = lambda *reference: None  # noqa: E731


def model_of(data_or_path):
    ds = pydicom.dcmread(io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path)
    return ds.to_json_dict()


class Balance(HTMLParser):
    """Checks that every ul, li, h1-h6, a and span closes in order."""
    CHECKED = {"ul", "li", "a", "span", "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr", "td", "th", "p"}

    def __init__(self):
        super().__init__()
        self.open, self.texts = [], []

    def handle_starttag(self, tag, attrs):
        if tag in self.CHECKED:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.CHECKED:
            assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
            self.open.pop()

    def handle_data(self, data):
        self.texts.append(data)


def balanced(page: str) -> str:
    parser = Balance()
    parser.feed(page)
    parser.close()
    assert parser.open == []
    return "".join(parser.texts)


def test_dcmtks_sample_report_reads_whole():
    """OFFIS's test report: every value type, concept modifiers, by-reference items."""
    report = read_report(model_of(TEST_FILES / "test-SR.dcm"), NO_LINK)
    assert report.title == "Diagnosis"
    assert ("Verified by", "Jörg Riesmeier; Verifying Observer") in report.header
    kinds = {item.value_type for item in report.items}
    assert {"TEXT", "CODE", "NUM", "CONTAINER", "SCOORD", "TCOORD", "DATE", "TIME", "DATETIME", "UIDREF",
            "IMAGE", "COMPOSITE", "WAVEFORM", "REFERENCE"} <= kinds
    by_number = {item.number: item for item in report.items}
    assert by_number["1.2.2"].value == "3 cm"   # NUM with its UCUM unit
    assert any(item.value == "see item 1.3.2" for item in report.items)   # by reference
    assert any(item.value.startswith("CIRCLE (0, 0) (255, 255)") for item in report.items)
    assert any(item.value == "2000-12-06 12:00:00" for item in report.items)
    text = balanced(as_html(report))
    assert "A mass of" in text and "Sample Code 1" in text and "&" in text


@pytest.mark.parametrize("path", [p for p in pydicom_test_files()
                                  if p.name in ("reportsi.dcm", "test-SR.dcm", "reportsi_with_empty_number_tags.dcm")],
                         ids=lambda p: p.name)
def test_pydicoms_reports_render_as_balanced_html_and_text(path):
    report = read_report(model_of(path), NO_LINK)
    assert report.items
    balanced(as_html(report))
    assert report.title in as_text(report)


def test_values_are_escaped():
    data = measurement_report(generate_uid(), [(generate_uid(), generate_uid())], measurements=1,
                              text='<script>alert("x")</script>\nSecond line', PatientName="O'Brien^<b>")
    page = as_html(read_report(model_of(data), NO_LINK))
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>" not in page
    assert "Second line" in balanced(page)
    lines = as_text(read_report(model_of(data), NO_LINK)).splitlines()
    impression = next(n for n, line in enumerate(lines) if line.startswith("Impression"))
    assert lines[impression + 1] == "  Second line"   # a value's own lines indented under it


def test_a_hostile_tree_costs_a_bound_and_no_recursion():
    """Nested 5000 deep (Python's recursion limit is 1000) and 30000 wide: rendered up to the
    bounds, the rest counted."""
    deep = {"0040A730": {"vr": "SQ", "Value": []}}
    node = deep
    for _ in range(5000):
        child = {"0040A040": {"vr": "CS", "Value": ["CONTAINER"]}, "0040A730": {"vr": "SQ", "Value": []}}
        node["0040A730"]["Value"].append(child)
        node = child
    report = read_report(deep, NO_LINK)
    assert len(report.items) == MAX_DEPTH and report.left_out == 5000 - MAX_DEPTH
    balanced(as_html(report))
    text_item = {"0040A040": {"vr": "CS", "Value": ["TEXT"]}, "0040A160": {"vr": "UT", "Value": ["x"]}}
    wide = {"0040A730": {"vr": "SQ", "Value": [text_item] * 30000}}
    report = read_report(wide, NO_LINK)
    assert len(report.items) == MAX_ITEMS and report.left_out == 30000 - MAX_ITEMS
    assert f"{30000 - MAX_ITEMS} more items are not shown" in as_html(report)


def test_malformed_values_do_not_break_the_reading():
    odd = {"0040A730": {"vr": "SQ", "Value": [
        {"0040A040": {"vr": "CS", "Value": ["NUM"]}, "0040A300": {"vr": "SQ", "Value": [{}]}},
        {"0040A040": {"vr": "CS", "Value": ["IMAGE"]}},
        {"0040A040": {"vr": "CS", "Value": ["CODE"]}, "0040A168": {"vr": "SQ", "Value": "not a list"}},
        {"0040A040": {"vr": "CS"}, "0040A043": {"vr": "SQ", "Value": [None, 3]}},
        {"0040A040": {"vr": "CS", "Value": ["SCOORD"]}, "00700022": {"vr": "FL", "Value": [1.5, None, "x"]}},
        "not an item",
    ]}}
    report = read_report(odd, NO_LINK)
    assert len(report.items) == 5
    balanced(as_html(report))
    as_text(report)


def test_person_names():
    assert person({"Alphabetic": "Doe^Jane^M^Dr^III"}) == "Dr Jane M Doe III"
    assert person({"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}) == "Tarou Yamada = 太郎 山田"
    assert person("") == ""


def stored(client, data):
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code == 200, r.data
    ds = read(data)
    return ds, f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


@pytest.fixture
def study(client):
    """A CT series of two images and a 500-item measurement report about them."""
    study_uid, series_uid = generate_uid(), generate_uid()
    images = []
    for number in (1, 2):
        data = ct_instance(study_uid, series_uid, number=number, rows=32, columns=32,
                           patient_name="Müller^Jürgen", frames=3 if number == 2 else 1)
        images.append((series_uid, read(data).SOPInstanceUID))
        stored(client, data)
    report = measurement_report(study_uid, images, measurements=100, PatientName="Müller^Jürgen",
                                text="Keine Auffälligkeiten. 所見なし")
    ds, url = stored(client, report)
    return ds, url, images


def test_rendered_report_is_a_page_whose_links_render_the_images(client, study):
    ds, url, images = study
    r = client.get(f"{url}/rendered")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.data.decode("utf-8")
    text = balanced(page)
    assert "Imaging Measurement Report" in text and "Jürgen Müller" in text and "所見なし" in text
    assert "10 mm" in text and "Mass (4147007, SCT)" in text and "Lesion 100" in text
    links = sorted({part.split('"')[0] for part in page.split('href="')[1:]})
    assert links == sorted(f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{series}/instances/{uid}/rendered"
                           for series, uid in images)
    for link in links:
        image = client.get(link)
        assert image.status_code == 200 and image.headers["Content-Type"] == "image/jpeg"
    assert r.headers["ETag"] and client.get(f"{url}/rendered", headers={"If-None-Match": r.headers["ETag"]}).status_code == 304


def test_the_charset_is_honoured(client, study):
    _, url, _ = study
    r = client.get(f"{url}/rendered?charset=ISO-8859-1", headers={"Accept": "text/html"})
    assert r.headers["Content-Type"] == "text/html; charset=ISO-8859-1"
    assert "Jürgen".encode("latin-1") in r.data and b"&#25152;&#35211;" in r.data   # 所見 as references
    assert b'<meta charset="ISO-8859-1">' in r.data
    r = client.get(f"{url}/rendered", headers={"Accept": "text/plain; charset=utf-8"})
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8" and "所見なし" in r.data.decode()
    r = client.get(f"{url}/rendered", headers={"Accept": "text/plain", "Accept-Charset": "iso-8859-1, utf-8;q=0.5"})
    assert r.status_code == 406 and "ask for UTF-8" in r.get_json()["message"]   # 所見 has no Latin-1 form
    assert client.get(f"{url}/rendered?charset=klingon").status_code == 406
    assert client.get(f"{url}/rendered?charset=rot13").status_code == 406   # a codec, not a character set


@pytest.mark.parametrize("charset", ["idna", "undefined", "punycode", "unicode_escape", "utf-7"])
@pytest.mark.parametrize("media_type", ["text/html", "text/plain"])
def test_a_codec_that_writes_no_text_is_refused_by_name(client, study, charset, media_type):
    """idna and undefined exist as codecs and refuse to write a page: 500s before, on both services."""
    ds, url, _ = study
    r = client.get(f"{url}/rendered?charset={charset}", headers={"Accept": media_type})
    assert r.status_code == 406 and charset in r.get_json()["message"]
    query = (f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
             f"&objectUID={ds.SOPInstanceUID}&contentType={media_type}&charset={charset}")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 406 and charset in r.get_json()["message"]


def pdf_text(data: bytes, tmp_path) -> str:
    if shutil.which("pdftotext") is None:
        if in_ci():
            pytest.fail("pdftotext is not installed; make test installs it (poppler-utils)")
        pytest.skip("pdftotext is not installed (apt-get install poppler-utils; make test does)")
    (tmp_path / "report.pdf").write_bytes(data)
    return subprocess.run(["pdftotext", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_rendered_report_as_pdf(client, study, tmp_path):
    _, url, _ = study
    r = client.get(f"{url}/rendered", headers={"Accept": "application/pdf"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/pdf" and r.data[:5] == b"%PDF-"
    text = pdf_text(r.data, tmp_path)   # poppler, which did not write it, reads it
    assert "Imaging Measurement Report" in text and "Patient: Jürgen Müller" in text and "Lesion 100" in text
    assert "Keine Auffälligkeiten." in text


def test_the_report_negotiates_and_refuses(client, study):
    _, url, _ = study
    assert client.get(f"{url}/rendered", headers={"Accept": "image/jpeg"}).status_code == 406
    assert client.get(f"{url}/rendered", headers={"Accept": "*/*"}).headers["Content-Type"].startswith("text/html")
    r = client.get(f"{url}/rendered?anonymize=true")
    assert r.status_code == 406 and "removes its content" in r.get_json()["message"]


def test_wado_uri_renders_reports_with_the_same_renderer(client, study, tmp_path):
    ds, _, images = study
    query = (f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
             f"&objectUID={ds.SOPInstanceUID}")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/html; charset=utf-8"
    page = r.data.decode()
    assert "Lesion 100" in balanced(page)
    link = page.split('href="')[1].split('"')[0].replace("&amp;", "&")
    assert link.startswith("/dicom-web/wado?requestType=WADO&")
    assert client.get(link).headers["Content-Type"] == "image/jpeg"
    r = client.get(f"/dicom-web/wado?{query}&contentType=application/pdf")
    assert r.headers["Content-Type"] == "application/pdf" and "Lesion 100" in pdf_text(r.data, tmp_path)
    r = client.get(f"/dicom-web/wado?{query}&contentType=text/plain&charset=UTF-8")
    assert r.headers["Content-Type"] == "text/plain; charset=UTF-8" and "所見なし" in r.data.decode()


def test_a_reports_own_uids_are_checked_before_they_make_links_and_charsets_are_tokens(client):
    from service.access.reports import rendered_link

    link = rendered_link("/dicom-web")
    assert link("1.2.3", "1.2.4", "1.2.5", ()) == "/dicom-web/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered"
    assert link("1.2.3", "../../admin", "1.2.5", ()) is None and link("", "1.2", "1.3", ()) is None
    data = measurement_report(generate_uid(), [(generate_uid(), generate_uid())], measurements=1)
    _, url = stored(client, data)
    r = client.get(f"{url}/rendered?charset=latin%201", headers={"Accept": "text/html"})
    assert r.status_code == 400 and "character set name" in r.get_json()["message"]
    assert client.get(f"{url}/rendered?charset=utf-8%0d%0aX-Evil:1").status_code == 400
