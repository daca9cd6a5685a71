
import numpy as np
import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from testbed.synthetic import ct_instance
from tests.conftest import TEST_FILES
from testbed.messages import read, multipart_body, split_multipart, stow_headers

ELE = "1.2.840.10008.1.2.1"
ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def store(client, *datas):
    r = client.post("/dicom-web/studies", data=multipart_body(list(datas)), headers=stow_headers())
    assert r.status_code == 200, r.data




@pytest.fixture
def study(client):
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    datas = [ct_instance(study, s1, number=1), ct_instance(study, s1, number=2),
             ct_instance(study, s2, number=1, series_number=2)]
    store(client, *datas)
    return study, s1, s2, datas


def test_study_series_instance_as_stored(client, study):
    study_uid, s1, s2, datas = study
    r = client.get(f"/dicom-web/studies/{study_uid}", headers={"Accept": ANY})
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(r.data))
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert [body for _, body in parts] == datas
    for headers, body in parts:
        ds = read(body)
        assert headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
        assert headers["content-location"] == (f"http://localhost/dicom-web/studies/{study_uid}/series/"
                                               f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}")
    r = client.get(f"/dicom-web/studies/{study_uid}/series/{s1}", headers={"Accept": ANY})
    assert [b for _, b in split_multipart(r.data, r.headers["Content-Type"])] == datas[:2]
    sop = read(datas[2]).SOPInstanceUID
    r = client.get(f"/dicom-web/studies/{study_uid}/series/{s2}/instances/{sop}", headers={"Accept": ANY})
    assert [b for _, b in split_multipart(r.data, r.headers["Content-Type"])] == datas[2:]


@pytest.mark.parametrize("accept", [None, "*/*", "multipart/related; type=application/dicom",
                                    f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'])
def test_default_is_explicit_little_endian_multipart(client, accept):
    study_uid, series = generate_uid(), generate_uid()
    data = ct_instance(study_uid, series, transfer_syntax=ImplicitVRLittleEndian)
    store(client, data)
    r = client.get(f"/dicom-web/studies/{study_uid}", headers={"Accept": accept} if accept else {})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith('multipart/related; type="application/dicom"; boundary=')
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
    converted, original = read(body), read(data)
    assert converted.file_meta.TransferSyntaxUID == ELE and not converted.is_implicit_VR
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    assert converted.PatientName == original.PatientName


def test_big_endian_file_is_converted(client):
    data = (TEST_FILES / "MR_small_bigendian.dcm").read_bytes()
    store(client, data)
    ds = read(data)
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}")
    [(_, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert np.array_equal(read(body).pixel_array, ds.pixel_array)
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}", headers={"Accept": ANY})
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert body == data and headers["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.2")


def test_single_part_instance(client, study):
    study_uid, _, s2, datas = study
    sop = read(datas[2]).SOPInstanceUID
    url = f"/dicom-web/studies/{study_uid}/series/{s2}/instances/{sop}"
    r = client.get(url, headers={"Accept": "application/dicom"})
    assert r.status_code == 200 and r.data == datas[2]
    assert r.headers["Content-Type"] == f"application/dicom; transfer-syntax={ELE}"
    # Single part is for one instance only
    assert client.get(f"/dicom-web/studies/{study_uid}", headers={"Accept": "application/dicom"}).status_code == 406


def test_accept_query_parameter_overrides_header(client, study):
    study_uid, _, s2, datas = study
    sop = read(datas[2]).SOPInstanceUID
    r = client.get(f"/dicom-web/studies/{study_uid}/series/{s2}/instances/{sop}?accept=application/dicom",
                   headers={"Accept": "image/jpeg"})
    assert r.status_code == 200 and r.data == datas[2]


def test_compressed_is_decompressed_by_default(client):
    data = (TEST_FILES / "JPEG2000.dcm").read_bytes()
    store(client, data)
    study_uid = read(data).StudyInstanceUID
    r = client.get(f"/dicom-web/studies/{study_uid}")
    assert r.status_code == 200
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert headers["content-type"] == f"application/dicom; transfer-syntax={ELE}"
    assert int(r.headers["Content-Length"]) == len(r.data)
    assert np.array_equal(read(body).pixel_array, read(data).pixel_array)
    r = client.get(f"/dicom-web/studies/{study_uid}", headers={"Accept": ANY})
    assert r.status_code == 200 and split_multipart(r.data, r.headers["Content-Type"])[0][1] == data
    # A list of preferences: the first one that can be produced wins, per instance
    # (JPEG baseline cannot be made from JPEG 2000: no recompression yet)
    r = client.get(f"/dicom-web/studies/{study_uid}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50, '
                  'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.91;q=0.5'})
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert body == data and headers["content-type"].endswith("1.2.840.10008.1.2.4.91")


def test_mixed_study_is_206_with_warning(client):
    jpeg = read((TEST_FILES / "JPEG2000.dcm").read_bytes())
    study_uid = jpeg.StudyInstanceUID
    store(client, (TEST_FILES / "JPEG2000.dcm").read_bytes(), ct_instance(study_uid, generate_uid(), rows=8, columns=8))
    # Asked for JPEG 2000 only: the stored one goes as is, the 8x8 one is too small for the encoder.
    r = client.get(f"/dicom-web/studies/{study_uid}",
                   headers={"Accept": 'multipart/related; type="application/dicom"; '
                                      'transfer-syntax=1.2.840.10008.1.2.4.91'})
    assert r.status_code == 206 and "1 of 2 instances" in r.headers["Warning"]
    assert len(split_multipart(r.data, r.headers["Content-Type"])) == 1


def test_undecodable_single_instance_is_406(client):
    data = (TEST_FILES / "JPEG2000-embedded-sequence-delimiter.dcm").read_bytes()
    store(client, data)
    ds = read(data)
    r = client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
                   f"{ds.SOPInstanceUID}")
    assert r.status_code == 406 and "could not be decoded" in r.get_json()["message"]


@pytest.mark.parametrize("accept", ["image/jpeg", "application/dicom+json",
                                    "multipart/related; type=application/octet-stream"])
def test_unacceptable(client, study, accept):
    r = client.get(f"/dicom-web/studies/{study[0]}", headers={"Accept": accept})
    assert r.status_code == 406


def test_not_found_and_bad_uids(client, study):
    study_uid, s1, _, _ = study
    assert client.get(f"/dicom-web/studies/{generate_uid()}").status_code == 404
    assert client.get(f"/dicom-web/studies/{study_uid}/series/{generate_uid()}").status_code == 404
    assert client.get(f"/dicom-web/studies/{study_uid}/series/{s1}/instances/1.2.3").status_code == 404
    for bad in ["1.2.x", "..", "1..2", "1" * 65]:
        r = client.get(f"/dicom-web/studies/{bad}")
        assert r.status_code == 400, bad
    assert client.get(f"/dicom-web/studies/{study_uid}", headers={"Accept": "a/b; q=9"}).status_code == 400


def test_head_request(client, study):
    r = client.head(f"/dicom-web/studies/{study[0]}", headers={"Accept": ANY})
    assert r.status_code == 200 and r.data == b"" and int(r.headers["Content-Length"]) > 0


def test_public_base_url(tmp_path):
    from service import create_app
    from tests.conftest import make_config

    app = create_app(make_config(tmp_path, auth_enabled=False, public_base_url="https://pacs.example.org/dw/"))
    client = app.test_client()
    study_uid = generate_uid()
    r = client.post("/dicom-web/studies", data=multipart_body([ct_instance(study_uid, generate_uid())]),
                    headers=stow_headers())
    assert r.get_json()["00081190"]["Value"] == [f"https://pacs.example.org/dw/studies/{study_uid}"]


def test_forwarded_headers_from_a_trusted_proxy(tmp_path):
    from service import create_app
    from tests.conftest import make_config

    data = ct_instance(generate_uid(), generate_uid())
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.eu", "X-Forwarded-Prefix": "/pacs"}
    trusting = create_app(make_config(tmp_path / "a", auth_enabled=False, trusted_proxies=1)).test_client()
    r = trusting.post("/dicom-web/studies", data=multipart_body([data]), headers={**stow_headers(), **forwarded})
    # Host and scheme from the proxy; a prefix never (a client could choose it): DICOMWEB_PUBLIC_URL's job.
    assert r.get_json()["00081190"]["Value"][0].startswith("https://gw.example.eu/dicom-web/studies/")
    untrusting = create_app(make_config(tmp_path / "b", auth_enabled=False)).test_client()
    r = untrusting.post("/dicom-web/studies", data=multipart_body([data]), headers={**stow_headers(), **forwarded})
    assert r.get_json()["00081190"]["Value"][0].startswith("http://localhost/dicom-web/studies/")
    # Trusted hops, but the connection is not from a proxy address: a client reaching the app directly.
    direct = create_app(make_config(tmp_path / "c", auth_enabled=False, trusted_proxies=1)).test_client()
    direct.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    r = direct.post("/dicom-web/studies", data=multipart_body([data]), headers={**stow_headers(), **forwarded})
    assert r.get_json()["00081190"]["Value"][0].startswith("http://localhost/dicom-web/studies/")
    assert direct.get("/metrics").status_code == 404 and trusting.get("/metrics").status_code == 200



def test_a_host_without_port_gets_the_port_the_client_connected_to(tmp_path):
    """dicomweb-client sends Host without the port: the URLs handed back (RetrieveURL,
    Content-Location, BulkDataURI) name the socket's port, unless a trusted proxy or
    DICOMWEB_PUBLIC_URL says otherwise."""
    from service import create_app, with_socket_port
    from tests.conftest import make_config

    assert with_socket_port("archive.example", "8080", "http") == "archive.example:8080"
    assert with_socket_port("archive.example:9000", "8080", "http") == "archive.example:9000"
    assert with_socket_port("archive.example", "80", "http") == "archive.example"
    assert with_socket_port("archive.example", "443", "https") == "archive.example"
    assert with_socket_port("archive.example", "80", "https") == "archive.example:80"
    assert with_socket_port("[::1]", "8080", "http") == "[::1]:8080"
    assert with_socket_port("[::1]:8042", "8080", "http") == "[::1]:8042"
    assert with_socket_port("archive.example", "", "http") == "archive.example"   # a unix socket
    data = ct_instance(generate_uid(), generate_uid())
    ds = read(data)
    direct = create_app(make_config(tmp_path / "a", auth_enabled=False)).test_client()
    socket_port = {"SERVER_PORT": "8080"}   # what gunicorn sets from its listening socket
    r = direct.post("/dicom-web/studies", data=multipart_body([data]), headers={**stow_headers(), "Host": "localhost"},
                    environ_overrides=socket_port)
    assert r.get_json()["00081190"]["Value"][0].startswith("http://localhost:8080/dicom-web/studies/")
    r = direct.get(instance_url(ds), headers={"Accept": ANY, "Host": "localhost"}, environ_overrides=socket_port)
    [(headers, _)] = split_multipart(r.data, r.headers["Content-Type"])
    assert headers["content-location"].startswith("http://localhost:8080/dicom-web/studies/")
    r = direct.get(instance_url(ds) + "/metadata", headers={"Host": "localhost"}, environ_overrides=socket_port)
    assert r.get_json()[0]["7FE00010"]["BulkDataURI"].startswith("http://localhost:8080/dicom-web/studies/")
    trusting = create_app(make_config(tmp_path / "b", auth_enabled=False, trusted_proxies=1)).test_client()
    r = trusting.post("/dicom-web/studies", data=multipart_body([data]), headers={**stow_headers(),
                      "X-Forwarded-Host": "gw.example.eu", "X-Forwarded-Proto": "https"},
                      environ_overrides=socket_port)
    assert r.get_json()["00081190"]["Value"][0].startswith("https://gw.example.eu/dicom-web/studies/")

def instance_url(ds):
    return f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


@pytest.mark.parametrize("syntax, lossy", [("1.2.840.10008.1.2.4.80", False), ("1.2.840.10008.1.2.4.90", False),
                                           ("1.2.840.10008.1.2.4.70", False), ("1.2.840.10008.1.2.5", False),
                                           ("1.2.840.10008.1.2.4.81", True), ("1.2.840.10008.1.2.2", False),
                                           ("1.2.840.10008.1.2.1.99", False)])
def test_instances_are_compressed_on_request(client, syntax, lossy):
    data = ct_instance(generate_uid(), generate_uid(), rows=64, columns=64, frames=2, BitsStored=12,
                       PixelRepresentation=0)
    store(client, data)
    original = read(data)
    r = client.get(instance_url(original), headers={"Accept": f"application/dicom; transfer-syntax={syntax}"})
    assert r.status_code == 200 and r.headers["Content-Type"] == f"application/dicom; transfer-syntax={syntax}"
    converted = read(r.data)
    assert converted.file_meta.TransferSyntaxUID == syntax and converted.SOPInstanceUID == original.SOPInstanceUID
    error = np.abs(converted.pixel_array.astype(float) - original.pixel_array)
    assert error.max() <= (2 if lossy else 0)
    assert (converted.get("LossyImageCompression") == "01") == lossy


def test_a_study_is_compressed_instance_by_instance(client, study):
    r = client.get(f"/dicom-web/studies/{study[0]}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'})
    parts = split_multipart(r.data, r.headers["Content-Type"])
    assert r.status_code == 200 and len(parts) == 3
    assert all(h["content-type"].endswith("transfer-syntax=1.2.840.10008.1.2.4.80") for h, _ in parts)
    originals = {read(d).SOPInstanceUID: read(d) for d in study[3]}
    for _, body in parts:
        ds = read(body)
        assert np.array_equal(ds.pixel_array, originals[ds.SOPInstanceUID].pixel_array)


def test_a_target_the_image_does_not_fit_is_406_with_the_reason(client):
    data = ct_instance(generate_uid(), generate_uid())   # 16-bit: not for JPEG Baseline
    store(client, data)
    r = client.get(instance_url(read(data)),
                   headers={"Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50"})
    assert r.status_code == 406 and "transfer-syntax=*" in r.get_json()["message"]


def test_conversion_limits(tmp_path):
    from service import create_app
    from tests.conftest import API_KEY, make_config

    app = create_app(make_config(tmp_path, transcode_max_bytes=10_000, transcode_slots=1, transcode_wait=0.05))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    study = generate_uid()
    big, small = ct_instance(study, generate_uid(), rows=128, columns=128), ct_instance(study, generate_uid(),
                                                                                         rows=8, columns=8)
    store(client, big, small)
    jls = {"Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80"}
    r = client.get(instance_url(read(big)), headers=jls)
    assert r.status_code == 413 and "transfer-syntax=*" in r.get_json()["message"]
    r = client.get(f"/dicom-web/studies/{study}", headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                                     "transfer-syntax=1.2.840.10008.1.2.1.99"})
    assert r.status_code == 206 and len(split_multipart(r.data, r.headers["Content-Type"])) == 1
    limits = app.extensions["transcode_limits"]
    with limits.slot():                      # every slot of the worker busy
        r = client.get(instance_url(read(small)), headers={"Accept": "application/dicom; transfer-syntax="
                                                                     "1.2.840.10008.1.2"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    r = client.get(instance_url(read(small)), headers={"Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2"})
    assert r.status_code == 200


@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2"])
def test_a_large_instance_is_converted_frame_by_frame(app, client, target):
    """32 MiB of pixels: converting them holds one frame and bounded spools, not the instance."""
    import tracemalloc

    from testbed.synthetic import phantom
    from service.access import instances as retrieve

    frames = 64
    data = ct_instance(generate_uid(), generate_uid(), rows=512, columns=512, frames=frames,
                       pixels=phantom(512, 512)[None].repeat(frames, 0))
    store(client, data)
    original = read(data)
    del data
    archive = app.extensions["archive"]
    [stored] = archive.instances(original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    tracemalloc.start()
    converted = retrieve.convert(archive, retrieve.PlannedPart(stored, target), app.extensions["transcode_limits"],
                                 before_answer=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 << 20, f"{peak >> 20} MiB to convert 32 MiB of pixels"
    ds = read(converted.read())
    assert ds.file_meta.TransferSyntaxUID == target and ds.NumberOfFrames == frames
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert ds.PatientName == original.PatientName and ds.ImagePositionPatient == original.ImagePositionPatient


@pytest.mark.parametrize("name", ["MR_small_jp2klossless.dcm", "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "JPEG2000.dcm", "rtdose_rle.dcm",
                                  "SC_rgb_small_odd_jpeg.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"])
@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80"])
def test_stored_files_are_converted_frame_by_frame(client, name, target):
    data = (TEST_FILES / name).read_bytes()
    store(client, data)
    original = read(data)
    r = client.get(instance_url(original), headers={"Accept": f"application/dicom; transfer-syntax={target}"})
    if r.status_code == 406:   # the image does not fit the target: the reason is given
        assert "cannot be produced" in r.get_json()["message"] or "cannot be sent" in r.get_json()["message"]
        return
    assert r.status_code == 200, r.get_json()
    converted = read(r.data)
    assert converted.file_meta.TransferSyntaxUID == target
    assert np.array_equal(converted.pixel_array, original.pixel_array)
    for elem in original:
        if elem.tag.group not in (0x0002, 0x0028, 0x7FE0) and elem.VR not in ("SQ", "OB", "OW", "UN"):
            assert converted[elem.tag].value == elem.value, elem.keyword


def test_lossy_ratio_of_a_multi_frame_instance_counts_every_frame(client):
    """Frames decoded one by one carry a one-frame description: the ratio must still be the
    whole pixel data's (PS3.3 C.7.6.1.1.5.2)."""
    import pydicom.encaps

    data = (TEST_FILES / "SC_rgb_rle_2frame.dcm").read_bytes()
    store(client, data)
    original = read(data)
    r = client.get(instance_url(original), headers={"Accept": "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.81"})
    converted = read(r.data)
    frames = list(pydicom.encaps.generate_frames(converted.PixelData, number_of_frames=2))
    native = original.Rows * original.Columns * 3 * 2
    ratio = float(converted.LossyImageCompressionRatio)
    assert abs(ratio - native / sum(len(f) for f in frames)) / ratio < 0.05
    assert np.abs(converted.pixel_array.astype(int) - original.pixel_array.astype(int)).max() <= 2


def test_a_converted_study_reads_its_details_a_few_parts_at_a_time(client, monkeypatch):
    """The parts of a study converted frame by frame get their catalog details DETAILS_AHEAD at a
    time (one read where there was one a part), and each part is still its own instance."""
    from service.access.instances import DETAILS_AHEAD
    from storage.catalog import Catalog

    study, series = generate_uid(), generate_uid()
    count = DETAILS_AHEAD + 8
    sops = [generate_uid() for _ in range(count)]
    body = multipart_body([ct_instance(study, series, sop, number=n + 1, rows=8, columns=8, seed=n)
                           for n, sop in enumerate(sops)])
    assert client.post("/dicom-web/studies", data=body, headers=stow_headers()).status_code == 200
    reads = {"one": 0, "many": 0}
    one, many = Catalog.details, Catalog.details_of
    monkeypatch.setattr(Catalog, "details", lambda self, i: reads.__setitem__("one", reads["one"] + 1) or one(self, i))
    monkeypatch.setattr(Catalog, "details_of",
                        lambda self, f: reads.__setitem__("many", reads["many"] + 1) or many(self, f))
    r = client.get(f"/dicom-web/studies/{study}", headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ImplicitVRLittleEndian}'})
    assert r.status_code == 200
    parts = [read(p) for _, p in split_multipart(r.data, r.headers["Content-Type"])]
    assert sorted(str(ds.SOPInstanceUID) for ds in parts) == sorted(sops)
    assert all(ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian for ds in parts)
    assert reads == {"one": 0, "many": 2}


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "rtdose_rle.dcm", "MR_small_jpeg_ls_lossless.dcm",
                                  "MR_small_jp2klossless.dcm", "693_J2KI.dcm", "JPEG2000.dcm",
                                  "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm", "SC_rgb_jpeg_gdcm.dcm"])
def test_a_decoded_study_is_the_instance_decoded_whole(client, monkeypatch, name):
    """A study decoded as the answer reads it (the data set, then one frame at a time; a lossless
    grey instance's data set copied from its blob) holds what decoding the whole instance in
    memory gives (transcode.transcode): the same data set, lossy marks included, and pixels; the
    single instance, converted before its answer, the same."""
    import io

    from transcode import transcode

    data = (TEST_FILES / name).read_bytes()
    store(client, data)
    original = read(data)
    reference = read(transcode(io.BytesIO(data), ELE, str(original.file_meta.TransferSyntaxUID)))
    copied = name in ("MR_small_RLE.dcm", "rtdose_rle.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm")
    if copied:   # lossless grey: the data set is copied from the blob, never written by pydicom
        monkeypatch.setattr("transcode.instance._write_dataset", lambda *args: pytest.fail("written by pydicom"))
    r = client.get(f"/dicom-web/studies/{original.StudyInstanceUID}",
                   headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    single = client.get(instance_url(original), headers={"Accept": "application/dicom"})
    assert single.status_code == 200
    for converted in (read(body), read(single.data)):
        assert converted.file_meta.TransferSyntaxUID == ELE
        assert converted.PixelData == reference.PixelData
        assert [(e.tag, e.VR, e.value) for e in converted if e.tag != 0x7FE00010] == \
            [(e.tag, e.VR, e.value) for e in reference if e.tag != 0x7FE00010]
    if copied:
        from storage.dataset import _meta_elements

        data_set = data[_meta_elements(data)[1]:data.rindex(b"\xe0\x7f\x10\x00")]   # lossless grey: copied as stored
        assert data_set in body and data_set in single.data
