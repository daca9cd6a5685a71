"""Rendered resources and thumbnails, compared pixel by pixel with a reference computed here
from pydicom's pixel array with numpy (PS3.3 C.11 formulas written again, not imported)."""
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from testbed.synthetic import ct_instance, phantom
from tests.conftest import pydicom_test_files
from testbed.messages import multipart_body, read, split_multipart, stow_headers

FILES = {p.name: p for p in pydicom_test_files()}


def stored(client, data: bytes):
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code in (200, 202), r.data
    ds = read(data)
    return ds, f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def reference(ds, frame: int = 0, window=None) -> np.ndarray:
    """What the rendered image must be, from pydicom's decoding and the standard's formulas."""
    pixels = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[frame]
    photometric = ds.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        rgb = pydicom.pixels.apply_color_lut(pixels, ds)
        return (rgb.astype(np.uint32) >> 8).astype(np.uint8) if rgb.dtype.itemsize > 1 else rgb
    if pixels.ndim == 3:
        return pixels.astype(np.uint8)
    x = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    if window is None and "WindowCenter" in ds:
        first = lambda v: float(v[0]) if isinstance(v, pydicom.multival.MultiValue) else float(v)  # noqa: E731
        window = (first(ds.WindowCenter), first(ds.WindowWidth))
    if window is None:
        c, w = (x.min() + x.max()) / 2, max(x.max() - x.min(), 1e-9)
        y = np.clip(((x - c) / w + 0.5) * 255, 0, 255)
    else:
        c, w = window
        y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255,
                                                             ((x - (c - 0.5)) / (w - 1) + 0.5) * 255))
    y = np.rint(y).astype(np.uint8)
    return 255 - y if photometric == "MONOCHROME1" else y


def image_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "6154", "examples_rgb_color.dcm",
                                  "examples_palette.dcm", "SC_rgb_rle.dcm", "MR_small_jp2klossless.dcm"])
def test_rendered_png_equals_the_reference(client, name):
    data = FILES[name].read_bytes()
    ds, url = stored(client, data)
    r = client.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    assert np.array_equal(image_of(r.data), reference(ds))


def test_rendered_ybr_jpeg_is_rgb(client):
    ds, url = stored(client, FILES["examples_ybr_color.dcm"].read_bytes())
    r = client.get(f"{url}/frames/7/rendered", headers={"Accept": "image/png"})
    assert np.abs(image_of(r.data).astype(int) - reference(ds, frame=6).astype(int)).max() == 0


def test_window_parameter_and_functions(client):
    ds, url = stored(client, FILES["CT_small.dcm"].read_bytes())
    r = client.get(f"{url}/rendered?window=40,400", headers={"Accept": "image/png"})
    assert np.array_equal(image_of(r.data), reference(ds, window=(40, 400)))
    exact = image_of(client.get(f"{url}/rendered?window=40,400,linear-exact", headers={"Accept": "image/png"}).data)
    sigmoid = image_of(client.get(f"{url}/rendered?window=40,400,SIGMOID", headers={"Accept": "image/png"}).data)
    x = ds.pixel_array.astype(float) - 1024
    assert np.array_equal(exact, np.rint(np.clip(((x - 40) / 400 + 0.5) * 255, 0, 255)).astype(np.uint8))
    assert np.array_equal(sigmoid, np.rint(255 / (1 + np.exp(-4 * (x - 40) / 400))).astype(np.uint8))


def test_default_is_jpeg_close_to_the_reference(client):
    ds, url = stored(client, FILES["MR_small.dcm"].read_bytes())
    r = client.get(f"{url}/rendered?quality=95")
    assert r.headers["Content-Type"] == "image/jpeg"
    assert np.abs(image_of(r.data).astype(int) - reference(ds).astype(int)).mean() < 2


def test_jpeg_2000_rendered_as_the_accept_list_prefers(client):
    ds, url = stored(client, FILES["CT_small.dcm"].read_bytes())
    # The example of the DICOMweb talk: JPEG 2000 preferred, JPEG at half the preference.
    r = client.get(f"{url}/rendered?quality=100", headers={"Accept": "image/jp2;level=1, image/jpeg;q=0.5"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jp2"
    assert r.data[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JP2 file, not a bare codestream"
    assert np.array_equal(image_of(r.data), reference(ds)), "quality 100: reversible"
    lossy = client.get(f"{url}/rendered", headers={"Accept": "image/jp2"}).data
    assert len(lossy) < len(r.data) and np.abs(image_of(lossy).astype(int) - reference(ds).astype(int)).mean() < 3
    r = client.get(f"{url}/rendered", headers={"Accept": "image/jp2;q=0.2, image/jpeg"})
    assert r.headers["Content-Type"] == "image/jpeg"
    r = client.get(f"{url}/frames/1/rendered", headers={"Accept": 'multipart/related; type="image/jp2"'})
    [(headers, body)] = split_multipart(r.data, r.headers["Content-Type"])
    assert np.abs(image_of(body).astype(int) - reference(ds).astype(int)).mean() < 3


def test_viewport_keeps_proportions_and_crops(client):
    data = ct_instance(generate_uid(), generate_uid(), rows=200, columns=100, pixels=phantom(200, 100))
    ds, url = stored(client, data)
    assert Image.open(io.BytesIO(client.get(f"{url}/rendered?viewport=50,50").data)).size == (25, 50)
    r = client.get(f"{url}/rendered?viewport=40,40,10,20,40,40", headers={"Accept": "image/png"})
    crop = image_of(r.data)
    assert crop.shape == (40, 40)
    assert np.array_equal(crop, reference(ds)[20:60, 10:50])
    flipped = image_of(client.get(f"{url}/rendered?viewport=40,40,50,20,-40,40", headers={"Accept": "image/png"}).data)
    assert np.array_equal(flipped, reference(ds)[20:60, 10:50][:, ::-1])


def test_unequal_pixel_spacing_is_made_square(client):
    data = ct_instance(generate_uid(), generate_uid(), rows=100, columns=100, pixels=phantom(100, 100),
                       PixelSpacing=[1.0, 0.5])
    ds, url = stored(client, data)
    assert Image.open(io.BytesIO(client.get(f"{url}/rendered").data)).size == (100, 200)


def test_study_and_series_rendered_cover_every_instance(client):
    study, series = generate_uid(), generate_uid()
    datas = [ct_instance(study, series, number=n, rows=32, columns=32, pixels=phantom(32, 32, seed=n))
             for n in (1, 2, 3)]
    client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    for url in (f"/dicom-web/studies/{study}/rendered", f"/dicom-web/studies/{study}/series/{series}/rendered",
                f"/dicom-web/studies/{study}"):
        r = client.get(url, headers={"Accept": 'multipart/related; type="image/png"'})
        assert r.status_code == 200 and r.headers["Content-Type"].startswith('multipart/related; type="image/png"')
        parts = split_multipart(r.data, r.headers["Content-Type"])
        assert [image_of(body).tolist() for _, body in parts] == [reference(read(d)).tolist() for d in datas]
    r = client.get(f"/dicom-web/studies/{study}/rendered")
    assert r.headers["Content-Type"].startswith('multipart/related; type="image/jpeg"')


def test_multi_frame_rendered(client):
    ds, url = stored(client, FILES["examples_ybr_color.dcm"].read_bytes())
    parts = split_multipart(*(lambda r: (r.data, r.headers["Content-Type"]))(
        client.get(f"{url}/frames/3,1/rendered", headers={"Accept": "multipart/related; type=image/png"})))
    assert [image_of(b).tolist() for _, b in parts] == [reference(ds, 2).tolist(), reference(ds, 0).tolist()]
    gif = Image.open(io.BytesIO(client.get(f"{url}/rendered", headers={"Accept": "image/gif"}).data))
    durations = []
    for index in range(gif.n_frames):   # Pillow merges identical successive frames, adding their durations
        gif.seek(index)
        durations.append(gif.info["duration"])
    frame_time = float(ds.get("FrameTime") or 100)
    assert gif.n_frames > 1 and sum(durations) == pytest.approx(30 * frame_time, rel=0.15)   # GIF counts 10 ms


def test_thumbnails(client):
    study, series = generate_uid(), generate_uid()
    datas = [ct_instance(study, series, number=n, rows=256, columns=256, pixels=phantom(256, 256, seed=n))
             for n in (1, 2, 3)]
    client.post("/dicom-web/studies", data=multipart_body(datas), headers=stow_headers())
    r = client.get(f"/dicom-web/studies/{study}/series/{series}/thumbnail", headers={"Accept": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (128, 128)
    middle = np.asarray(Image.fromarray(reference(read(datas[1]))).resize((128, 128), Image.Resampling.LANCZOS))
    assert np.abs(image_of(r.data).astype(int) - middle.astype(int)).max() <= 1
    tag = r.headers["ETag"]
    assert "max-age" in r.headers["Cache-Control"]
    again = client.get(f"/dicom-web/studies/{study}/series/{series}/thumbnail", headers={
        "Accept": "image/png", "If-None-Match": tag})
    assert again.status_code == 304
    assert client.get(f"/dicom-web/studies/{study}/thumbnail?viewport=64,64").status_code == 200
    sop = read(datas[0]).SOPInstanceUID
    assert client.get(f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/1/thumbnail").status_code == 200


@pytest.mark.parametrize("query", ["quality=0", "quality=x", "window=40", "window=40,0", "window=40,400,cubic",
                                   "viewport=0,10", "viewport=10,10,1,2", "annotation=age", "iccprofile=adobergb"])
def test_malformed_parameters_are_400(client, query):
    ds, url = stored(client, FILES["CT_small.dcm"].read_bytes())
    r = client.get(f"{url}/rendered?{query}")
    assert r.status_code == 400, query


def test_unacceptable_and_missing(client):
    ds, url = stored(client, FILES["CT_small.dcm"].read_bytes())
    assert client.get(f"{url}/rendered", headers={"Accept": "image/webp"}).status_code == 406
    assert client.get(f"/dicom-web/studies/{ds.StudyInstanceUID}/rendered",
                      headers={"Accept": "image/png"}).status_code == 406   # a study is several images
    report, report_url = stored(client, FILES["reportsi.dcm"].read_bytes())
    assert client.get(f"{report_url}/rendered", headers={"Accept": "image/png"}).status_code == 406   # a report
    assert client.get(f"/dicom-web/studies/{report.StudyInstanceUID}/rendered").status_code == 404   # no image
    assert client.get(f"{url}/frames/2/rendered").status_code == 400


def test_annotations_and_icc_profile(client):
    ds, url = stored(client, FILES["CT_small.dcm"].read_bytes())
    plain = image_of(client.get(f"{url}/rendered", headers={"Accept": "image/png"}).data)
    annotated = Image.open(io.BytesIO(client.get(f"{url}/rendered?annotation=patient,technique&iccprofile=srgb",
                                                 headers={"Accept": "image/png"}).data))
    assert annotated.info.get("icc_profile")
    assert np.asarray(annotated.convert("L")).tolist() != plain.tolist()


def test_a_damaged_rescale_value_is_refused_not_a_500(client):
    """A Rescale Intercept that is not a number (pydicom keeps it as text): 406 naming it (a 500
    before; test_property's damaged files found it)."""
    data = ct_instance(generate_uid(), generate_uid(), rows=8, columns=8)
    assert data.count(b"-1024.0 ") == 1
    _, url = stored(client, data.replace(b"-1024.0 ", b"-10z4.0 "))
    r = client.get(url + "/rendered")
    assert r.status_code == 406 and "RescaleIntercept" in r.get_json()["message"]
    assert client.get(url + "/frames/1").status_code == 200   # the pixels themselves are sound
