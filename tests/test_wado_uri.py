"""WADO-URI (PS3.18 §9) with raw requests, as curl or an older viewer sends them."""
import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import pydicom_test_files
from testbed.messages import multipart_body, read, stow_headers
from tests.test_rendered_rs import reference

FILES = {p.name: p for p in pydicom_test_files()}


def stored(client, name):
    data = FILES[name].read_bytes()
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code in (200, 202)
    ds = read(data)
    return ds, (f"requestType=WADO&studyUID={ds.StudyInstanceUID}&seriesUID={ds.SeriesInstanceUID}"
                f"&objectUID={ds.SOPInstanceUID}")


def test_default_is_a_jpeg_of_the_image(client):
    ds, query = stored(client, "MR_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert np.abs(np.asarray(Image.open(io.BytesIO(r.data))).astype(int) - reference(ds).astype(int)).mean() < 3
    assert client.get(f"/wado?{query}").status_code == 200   # at the server's root too


def test_png_with_window_region_and_size(client):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&windowCenter=40&windowWidth=400")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), reference(ds, window=(40, 400)))
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&region=0.25,0.25,0.75,0.75&columns=32")
    image = Image.open(io.BytesIO(r.data))
    assert image.size == (32, 32)
    expected = Image.fromarray(reference(ds)[32:96, 32:96]).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.abs(np.asarray(image).astype(int) - np.asarray(expected).astype(int)).max() <= 1


def test_application_dicom_in_a_transfer_syntax(client):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=application/dicom")
    assert r.headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert read(r.data).SOPInstanceUID == ds.SOPInstanceUID
    r = client.get(f"/dicom-web/wado?{query}&contentType=application/dicom&transferSyntax=1.2.840.10008.1.2.4.80")
    converted = read(r.data)
    assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
    assert np.array_equal(converted.pixel_array, ds.pixel_array)


def test_multi_frame_frame_number(client):
    ds, query = stored(client, "examples_ybr_color.dcm")
    r = client.get(f"/dicom-web/wado?{query}&contentType=image/png&frameNumber=5")
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.data))), reference(ds, frame=4))
    assert client.get(f"/dicom-web/wado?{query}&frameNumber=31").status_code == 400


def test_structured_report_as_text(client):
    ds, query = stored(client, "reportsi.dcm")
    r = client.get(f"/dicom-web/wado?{query}")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert b"<ul" in r.data
    text = client.get(f"/dicom-web/wado?{query}&contentType=text/plain").data.decode()
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeMeaning in text
    assert client.get(f"/dicom-web/wado?{query}&contentType=image/jpeg").status_code == 406


@pytest.mark.parametrize("change, named", [
    ("requestType=WADO&", "requestType"), ("studyUID=", "studyUID"), ("&objectUID=", "objectUID"),
])
def test_missing_parameters_are_named(client, change, named):
    ds, query = stored(client, "CT_small.dcm")
    broken = query.replace(change, "", 1) if not change.startswith("&") else query.split(change)[0]
    if change == "studyUID=":
        broken = query.replace(f"studyUID={ds.StudyInstanceUID}", "studyUID=")
    r = client.get(f"/dicom-web/wado?{broken}")
    assert r.status_code == 400 and named in r.get_json()["message"]


@pytest.mark.parametrize("extra, named", [
    ("&contentType=application/dicom&rows=10", "rows"),
    ("&contentType=application/dicom&windowCenter=1&windowWidth=2", "windowCenter"),
    ("&windowCenter=40", "windowWidth"),
    ("&contentType=image/png&imageQuality=50", "imageQuality"),
    ("&imageQuality=500", "imageQuality"),
    ("&transferSyntax=1.2.840.10008.1.2.1", "transferSyntax"),
    ("&anonymize=yes", "anonymize"),
    ("&region=0.5,0.5,0.2,0.9", "region"),
    ("&rows=-4", "rows"),
    ("&presentationUID=1.2.3", "presentationUID"),
])
def test_contradictory_parameters_are_named(client, extra, named):
    ds, query = stored(client, "CT_small.dcm")
    r = client.get(f"/dicom-web/wado?{query}{extra}")
    assert r.status_code == 400 and named in r.get_json()["message"], r.get_json()


def test_unknown_object_and_type(client):
    ds, query = stored(client, "CT_small.dcm")
    assert client.get(f"/dicom-web/wado?{query.replace(ds.SOPInstanceUID, '1.2.3.4')}").status_code == 404
    assert client.get(f"/dicom-web/wado?{query}&contentType=video/mpeg").status_code == 406


def gsps(image, **attributes):
    """A Grayscale Softcopy Presentation State referencing ``image``, in its study."""
    from pydicom import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ps = Dataset()
    ps.file_meta = FileMetaDataset()
    ps.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ps.SOPClassUID = ps.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ps.SOPInstanceUID = ps.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ps.StudyInstanceUID, ps.SeriesInstanceUID, ps.Modality = image.StudyInstanceUID, generate_uid(), "PR"
    ps.PatientName, ps.PatientID = image.PatientName, image.PatientID
    referenced = Dataset()
    referenced.ReferencedSOPClassUID, referenced.ReferencedSOPInstanceUID = image.SOPClassUID, image.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedImageSequence = image.SeriesInstanceUID, [referenced]
    ps.ReferencedSeriesSequence = [series]
    ps.PresentationLUTShape = "IDENTITY"
    for keyword, value in attributes.items():
        setattr(ps, keyword, value)
    out = io.BytesIO()
    ps.save_as(out, enforce_file_format=True)
    return ps, out.getvalue()


def presented(client, image, state, extra: str = ""):
    """``state`` stored, then WADO-URI's PNG of ``image`` with it applied (and ``extra`` parameters)."""
    out = io.BytesIO()
    state.save_as(out, enforce_file_format=True)
    assert client.post("/dicom-web/studies", data=multipart_body([out.getvalue()]),
                       headers=stow_headers()).status_code == 200
    return client.get(f"/dicom-web/wado?requestType=WADO&studyUID={image.StudyInstanceUID}"
                      f"&seriesUID={image.SeriesInstanceUID}&objectUID={image.SOPInstanceUID}&contentType=image/png"
                      f"&presentationUID={state.SOPInstanceUID}&presentationSeriesUID={state.SeriesInstanceUID}{extra}")


def item(**attributes):
    from pydicom import Dataset

    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_a_presentation_state_is_applied(client):
    """VOI, inverse presentation LUT, shutter, a pixel-unit polyline in its layer's colour, a
    display-unit text, the displayed area, then flip and rotation, as PS3.4 N.2 orders them."""
    from pydicom.uid import generate_uid

    from testbed.synthetic import ct_instance
    from transcode.presentation import lab_to_rgb

    y, x = np.mgrid[0:64, 0:96]
    values = (x * 40 + y * 3).astype(np.uint16)   # 0..3989, rescaled by -1024
    data = ct_instance(generate_uid(), generate_uid(), rows=64, columns=96, pixels=values[None])
    image = read(data)
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code == 200
    red = [round(53.24 / 100 * 65535), round((80.09 + 128) / 255 * 65535), round((67.2 + 128) / 255 * 65535)]
    ps, _ = gsps(
        image,
        SoftcopyVOILUTSequence=[item(WindowCenter=1000, WindowWidth=2000)],
        PresentationLUTShape="INVERSE",
        ShutterShape="RECTANGULAR", ShutterLeftVerticalEdge=3, ShutterRightVerticalEdge=94,
        ShutterUpperHorizontalEdge=1, ShutterLowerHorizontalEdge=64, ShutterPresentationValue=0,
        GraphicLayerSequence=[item(GraphicLayer="MARKS", GraphicLayerOrder=1,
                                   GraphicLayerRecommendedDisplayCIELabValue=red)],
        GraphicAnnotationSequence=[item(
            GraphicLayer="MARKS",
            GraphicObjectSequence=[item(GraphicAnnotationUnits="PIXEL", GraphicDimensions=2, NumberOfGraphicPoints=2,
                                        GraphicData=[10.0, 40.5, 50.0, 40.5], GraphicType="POLYLINE",
                                        GraphicFilled="N")],
            TextObjectSequence=[item(UnformattedTextValue="LEFT", AnchorPoint=[0.05, 0.05],
                                     AnchorPointAnnotationUnits="DISPLAY", AnchorPointVisibility="N")])],
        DisplayedAreaSelectionSequence=[item(DisplayedAreaTopLeftHandCorner=[1, 1],
                                             DisplayedAreaBottomRightHandCorner=[80, 64],
                                             PresentationSizeMode="SCALE TO FIT", PresentationPixelSpacing=[0.7, 0.7])],
        ImageHorizontalFlip="Y", ImageRotation=90)
    r = presented(client, image, ps)
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(r.data)).convert("RGB")).astype(int)
    # the expected picture, before annotations: VOI on HU, inverted, shuttered, cropped to 80
    # columns, flipped, turned a quarter clockwise (64 columns × 80 rows)
    hu = values.astype(float) - 1024
    low, high = 1000 - 0.5 - 1999 / 2, 1000 - 0.5 + 1999 / 2
    grey = np.where(hu <= low, 0, np.where(hu > high, 255, ((hu - 999.5) / 1999 + 0.5) * 255))
    grey = 255 - np.clip(np.rint(grey), 0, 255)
    grey[:, :2] = 0
    grey[:, 94:] = 0
    line = np.zeros_like(grey, bool)
    line[40, 10:51] = True
    expected, drawn = np.rot90(np.fliplr(grey[:, :80]), k=-1), np.rot90(np.fliplr(line[:, :80]), k=-1)
    assert shown.shape == (80, 64, 3)
    plain = ~drawn
    plain[:18, :40] = False   # where the display-unit text lies (top left of what is shown)
    assert np.abs(shown[plain][:, 0] - expected[plain]).max() <= 1
    assert np.all(shown[drawn][:, 0] > 200) and np.all(shown[drawn][:, 1] < 80)   # the layer's red
    assert tuple(shown[drawn][0]) == lab_to_rgb(*red)
    text_corner = shown[:18, :40]
    assert (np.abs(text_corner[..., 0] - text_corner[..., 2]) > 100).any()   # red text drawn there


def test_presentation_states_that_do_not_apply_are_named(client):
    from pydicom.uid import generate_uid

    ds, query = stored(client, "CT_small.dcm")
    other, _ = stored(client, "MR_small.dcm")
    ps, _ = gsps(other)   # references another image
    ps.StudyInstanceUID = ds.StudyInstanceUID
    out = io.BytesIO()
    ps.save_as(out, enforce_file_format=True)
    client.post("/dicom-web/studies", data=multipart_body([out.getvalue()]), headers=stow_headers())
    base = f"/dicom-web/wado?{query}&presentationSeriesUID={ps.SeriesInstanceUID}"
    r = client.get(f"{base}&presentationUID={ps.SOPInstanceUID}")
    assert r.status_code == 400 and "does not reference this image" in r.get_json()["message"]
    assert client.get(f"{base}&presentationUID={generate_uid()}").status_code == 404
    r = client.get(f"{base}&presentationUID={ps.SOPInstanceUID}&contentType=application/dicom")
    assert r.status_code == 400 and "rendered images only" in r.get_json()["message"]
    r = client.get(f"/dicom-web/wado?{query}&presentationSeriesUID=1.2&presentationUID=x.y")
    assert r.status_code == 400 and "presentationUID is not a valid UID" in r.get_json()["message"]


def test_wado_rs_renders_a_presentation_state_as_the_images_it_shows(client):
    """PS3.18 §10.4.1.1.3: a presentation state's …/rendered is its image as it shows it, the
    same picture WADO-URI gives with presentationUID."""
    ds, query = stored(client, "CT_small.dcm")
    ps, ps_data = gsps(ds, SoftcopyVOILUTSequence=[item(WindowCenter=100, WindowWidth=50)], ImageRotation=180)
    assert client.post("/dicom-web/studies", data=multipart_body([ps_data]), headers=stow_headers()).status_code == 200
    url = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ps.SeriesInstanceUID}/instances/{ps.SOPInstanceUID}"
    rendered = client.get(f"{url}/rendered", headers={"Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.headers["Content-Type"] == "image/png"
    by_uri = client.get(f"/dicom-web/wado?{query}&contentType=image/png&presentationUID={ps.SOPInstanceUID}"
                        f"&presentationSeriesUID={ps.SeriesInstanceUID}")
    assert rendered.data == by_uri.data
    plain = np.asarray(Image.open(io.BytesIO(client.get(f"/dicom-web/wado?{query}&contentType=image/png").data)))
    assert not np.array_equal(np.asarray(Image.open(io.BytesIO(rendered.data)).convert("L")), plain)
    assert client.get(f"{url}/rendered?anonymize=true").status_code == 406


def test_a_presentation_lut_table_maps_the_voi_output(client):
    """A Presentation LUT Sequence (here a 4096-entry, 12-bit curve squaring its input) maps the
    VOI output to P-values, instead of the identity shape."""
    from pydicom.uid import generate_uid

    from testbed.synthetic import ct_instance

    y, x = np.mgrid[0:32, 0:256]
    values = (x * 16).astype(np.uint16)   # 12 bits stored; HU -1024..3056 once rescaled
    data = ct_instance(generate_uid(), generate_uid(), rows=32, columns=256, pixels=values[None])
    image = read(data)
    assert client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers()).status_code == 200
    curve = [round(((n / 4095) ** 2) * 4095) for n in range(4096)]
    ps, _ = gsps(image, SoftcopyVOILUTSequence=[item(WindowCenter=1000, WindowWidth=4096)],
                       PresentationLUTSequence=[item(LUTDescriptor=[4096, 0, 12],
                                                           LUTData=np.asarray(curve, "<u2").tobytes())])
    del ps.PresentationLUTShape
    shown = np.asarray(Image.open(io.BytesIO(presented(client, image, ps).data)).convert("L")).astype(float)
    linear = np.clip(np.rint(((values[0].astype(float) - 1024 - 999.5) / 4095 + 0.5) * 255), 0, 255)
    expected = np.rint((linear / 255) ** 2 * 255)
    assert np.abs(shown[0] - expected).max() <= 2 and np.abs(shown[0] - linear).max() > 40


def test_a_presentation_states_bitmap_overlay_is_drawn_in_its_layer(client):
    from pydicom.uid import generate_uid

    from testbed.synthetic import ct_instance

    data = ct_instance(generate_uid(), generate_uid(), rows=40, columns=40, pixels=np.zeros((1, 40, 40), np.uint16))
    image = read(data)
    assert client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers()).status_code == 200
    mask = np.zeros((10, 16), np.uint8)
    mask[2:8, 3:13] = 1
    ps, _ = gsps(image, GraphicLayerSequence=[item(GraphicLayer="OVER", GraphicLayerOrder=1,
                                                   GraphicLayerRecommendedDisplayGrayscaleValue=65535)])
    ps.add_new(0x60000010, "US", 10)
    ps.add_new(0x60000011, "US", 16)
    ps.add_new(0x60000050, "SS", [21, 5])   # row 21, column 5 (1-based)
    ps.add_new(0x60000100, "US", 1)
    ps.add_new(0x60000102, "US", 0)
    ps.add_new(0x60001001, "CS", "OVER")
    ps.add_new(0x60003000, "OW", np.packbits(mask.ravel(), bitorder="little").tobytes())
    r = presented(client, image, ps, "&windowCenter=0&windowWidth=100")
    shown = np.asarray(Image.open(io.BytesIO(r.data)).convert("L"))
    expected = np.zeros((40, 40), bool)
    expected[20:30, 4:20] = mask.astype(bool)
    assert np.array_equal(shown > 200, expected)


def test_a_presentation_state_activates_the_images_own_overlay(client):
    """An overlay of the image (here pydicom's examples_overlay.dcm, 6000) is drawn when the state
    activates its group in a layer, and not otherwise."""
    ds, query = stored(client, "examples_overlay.dcm")
    overlay = ds.overlay_array(0x6000).astype(bool)
    plain, _ = gsps(ds, SoftcopyVOILUTSequence=[item(WindowCenter=-10000, WindowWidth=10)])   # every pixel white
    active, _ = gsps(ds, SoftcopyVOILUTSequence=[item(WindowCenter=-10000, WindowWidth=10)],
                     GraphicLayerSequence=[item(GraphicLayer="MASK", GraphicLayerOrder=1,
                                                GraphicLayerRecommendedDisplayGrayscaleValue=0)])
    active.add_new(0x60001001, "CS", "MASK")
    shown = {}
    for name, state in (("plain", plain), ("active", active)):
        shown[name] = np.asarray(Image.open(io.BytesIO(presented(client, ds, state).data)).convert("L"))
    assert (shown["plain"] > 250).all()
    rows, columns = overlay.shape
    top, left = (int(v) - 1 for v in ds[0x60000050].value)
    drawn = shown["active"][top:top + rows, left:left + columns] < 5   # black where the overlay is set
    assert np.array_equal(drawn, overlay[:drawn.shape[0], :drawn.shape[1]]) and overlay.sum() > 100


def test_a_hostile_presentation_state_costs_a_bound_and_no_500(client):
    """Half a million points, a text of a million characters, frame numbers that name no frame,
    a displayed area of a billion pixels: drawn within the bounds, or refused, never a 500."""
    ds, _ = stored(client, "CT_small.dcm")
    many = item(GraphicAnnotationUnits="PIXEL", GraphicDimensions=2, NumberOfGraphicPoints=65535,
                GraphicData=[float(n % 128) for n in range(500_000)], GraphicType="POLYLINE", GraphicFilled="N")
    huge_text = item(UnformattedTextValue="x" * 1_000_000, AnchorPoint=[1.0, 1.0], AnchorPointAnnotationUnits="PIXEL")
    state, _ = gsps(ds, GraphicAnnotationSequence=[item(GraphicLayer="L", GraphicObjectSequence=[many] * 3,
                                                        TextObjectSequence=[huge_text])],
                    DisplayedAreaSelectionSequence=[item(DisplayedAreaTopLeftHandCorner=[-40000, -40000],
                                                         DisplayedAreaBottomRightHandCorner=[40000, 40000])])
    r = presented(client, ds, state)
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (128, 128)   # the area ignored as damage
    damaged, _ = gsps(ds, SoftcopyVOILUTSequence=[item(WindowCenter=40, WindowWidth=400, ReferencedImageSequence=[
        item(ReferencedSOPInstanceUID=ds.SOPInstanceUID, ReferencedFrameNumber=[0, -5, 99999])])])
    r = presented(client, ds, damaged)
    assert r.status_code in (200, 406), r.data[:200]
