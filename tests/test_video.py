"""Video instances rendered: the stream as stored, byte for byte, with byte ranges; remuxed
into MP4 when stored otherwise; a frame of it as an image and as the thumbnail; and multi-frame
images made into an MP4 at their frame rate. ffprobe (ffmpeg's own reader) checks what is made."""
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from tests.conftest import in_ci
from testbed.messages import multipart_body, read, stow_headers
from testbed.synthetic import ct_instance, video_instance, video_stream
from transcode.video import container, frame_time_ms


@pytest.fixture(autouse=True, scope="module")
def ffmpeg():
    if shutil.which("ffmpeg") is None:
        if in_ci():
            pytest.fail("ffmpeg is not installed; make test installs it")
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg; make serve and make test do)")


def stored(client, data):
    r = client.post("/dicom-web/studies", data=multipart_body([data]), headers=stow_headers())
    assert r.status_code == 200, r.data
    ds = read(data)
    return ds, f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def probe(data: bytes, tmp_path) -> dict:
    (tmp_path / "probe").write_bytes(data)
    run = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json",
                          str(tmp_path / "probe")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_containers_are_told_apart():
    assert container(video_stream("h264-mp4", 0.2)) == "mp4"
    assert container(video_stream("h264-ts", 0.2)) == "mpegts"
    assert container(video_stream("mpeg2-ps", 0.2)) == "mpegps"
    assert container(b"\x00\x00\x00\x01\x67" + b"\0" * 200) == "h264"
    assert container(b"\x00\x00\x00\x01\x40\x01" + b"\0" * 200) == "hevc"
    assert container(b"garbage" * 40) == "unknown"


def test_frame_time_comes_from_whichever_attribute_is_there():
    values = {"FrameTime": None, "CineRate": "30", "RecommendedDisplayFrameRate": None}
    assert frame_time_ms(values.get) == pytest.approx(1000 / 30)
    assert frame_time_ms({"FrameTime": "33.3"}.get) == pytest.approx(33.3)
    assert frame_time_ms({"FrameTime": "-1", "CineRate": "0"}.get) == 100.0   # nonsense: the default
    assert frame_time_ms({}.get) == 100.0


@pytest.mark.parametrize("form, media_type", [("h264-mp4", "video/mp4"), ("hevc-mp4", "video/mp4"),
                                              ("h264-ts", "video/mp2t"), ("mpeg2-ps", "video/mpeg")])
def test_a_video_renders_as_its_stream_with_byte_ranges(client, form, media_type):
    stream = video_stream(form, 1.0)
    ds, url = stored(client, video_instance(generate_uid(), generate_uid(), form, stream=stream))
    r = client.get(f"{url}/rendered")
    assert r.status_code == 200 and r.headers["Content-Type"] == media_type
    assert r.headers["Accept-Ranges"] == "bytes" and r.data == stream   # byte for byte, from the blob
    r = client.get(f"{url}/rendered", headers={"Range": "bytes=100-1099", "Accept": media_type})
    assert r.status_code == 206 and r.data == stream[100:1100]
    assert r.headers["Content-Range"] == f"bytes 100-1099/{len(stream)}"
    r = client.get(f"{url}/rendered", headers={"Range": "bytes=-10"})
    assert r.data == stream[-10:]
    assert client.get(f"{url}/rendered", headers={"Range": f"bytes={len(stream)}-"}).status_code == 416


@pytest.mark.parametrize("form", ["h264-ts", "mpeg2-ps"])
def test_a_video_stored_in_another_container_is_remuxed_into_mp4(client, tmp_path, form):
    ds, url = stored(client, video_instance(generate_uid(), generate_uid(), form, seconds=1.0))
    r = client.get(f"{url}/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4" and r.data[4:8] == b"ftyp"
    info = probe(r.data, tmp_path)
    assert info["streams"][0]["codec_name"] == ("h264" if form.startswith("h264") else "mpeg2video")
    assert int(info["streams"][0]["nb_read_frames"]) == 25   # copied, every frame
    part = client.get(f"{url}/rendered", headers={"Accept": "video/mp4", "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.data == r.data[:100]   # the same remux each time
    as_stored = client.get(f"{url}/rendered", headers={"Accept": "*/*"})
    assert as_stored.headers["ETag"] != r.headers["ETag"] == part.headers["ETag"]   # another representation


@pytest.mark.parametrize("form", ["h264-mp4", "h264-mp4-index-last", "h264-ts", "hevc-mp4", "mpeg2-ps"])
def test_a_videos_frame_and_thumbnail_are_images_of_it(client, form):
    ds, url = stored(client, video_instance(generate_uid(), generate_uid(), form, seconds=2.0))
    first = Image.open(io.BytesIO(client.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"}).data))
    assert first.size == (320, 240)
    late = Image.open(io.BytesIO(client.get(f"{url}/frames/40/rendered", headers={"Accept": "image/png"}).data))
    difference = np.abs(np.asarray(first, float) - np.asarray(late, float)).mean()
    assert difference > 5   # testsrc2 moves: frame 40 is not frame 1
    assert np.asarray(first).std() > 20   # a picture, not a blank
    for thumbnail_url in (f"{url}/thumbnail", f"/dicom-web/studies/{ds.StudyInstanceUID}/thumbnail"):
        r = client.get(thumbnail_url)
        assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(r.data)).size) == 128
    r = client.get(f"{url}/rendered", headers={"Accept": "image/jpeg"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.data)).size == (320, 240)
    assert client.get(f"{url}/frames/51/rendered").status_code == 400   # 50 frames


def test_a_damaged_video_is_406_and_an_anonymised_one_refused(client):
    ds, url = stored(client, video_instance(generate_uid(), generate_uid(), "h264-ts",
                                            stream=b"\x47" + bytes(range(256)) * 40))
    r = client.get(f"{url}/frames/1/rendered", headers={"Accept": "image/png"})
    assert r.status_code == 406 and "ffmpeg" in r.get_json()["message"]
    r = client.get(f"{url}/rendered?anonymize=true")
    assert r.status_code == 406 and "anonymised" in r.get_json()["message"]


def test_a_multi_frame_image_is_made_into_an_mp4_at_its_frame_rate(client, tmp_path):
    frames = 30
    y, x = np.mgrid[0:96, 0:128]
    pixels = np.stack([((x + 4 * n) % 128 * 32).astype(np.uint16) for n in range(frames)])
    ds, url = stored(client, ct_instance(generate_uid(), generate_uid(), rows=96, columns=128, frames=frames,
                                         pixels=pixels, FrameTime=50.0, WindowCenter=2048, WindowWidth=4096))
    r = client.get(f"{url}/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 200 and r.headers["Content-Type"] == "video/mp4"
    info = probe(r.data, tmp_path)
    stream = info["streams"][0]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (128, 96)
    assert int(stream["nb_read_frames"]) == frames and stream["avg_frame_rate"] == "20/1"   # 50 ms a frame
    assert float(info["format"]["duration"]) == pytest.approx(1.5, abs=0.1)
    assert client.get(f"{url}/rendered", headers={"Accept": "video/mp4", "Range": "bytes=0-9"}).data == r.data[:10]
    mpeg = client.get(f"{url}/rendered", headers={"Accept": "video/mpeg"})
    assert mpeg.status_code == 200 and mpeg.headers["Content-Type"] == "video/mpeg"
    info = probe(mpeg.data, tmp_path)
    assert info["streams"][0]["codec_name"] == "mpeg2video" and info["streams"][0]["avg_frame_rate"] == "24/1"
    assert int(info["streams"][0]["nb_read_frames"]) == 36   # 30 frames at 20 fps shown at 24: 1.5 s still
    assert client.get(f"{url}/rendered", headers={"Accept": "video/h265"}).status_code == 406
    assert client.get(f"{url}/rendered").headers["Content-Type"] == "image/jpeg"   # an image by default


def test_videos_in_s3_are_framed_from_a_copy_and_sent_by_range(tmp_path, aws_env, moto_server):
    """Where blobs are objects, not files, ffmpeg is given a copy (of the stream's start for a
    frame); the stream itself is sent by ranged GETs, as from disk."""
    import time

    import boto3

    from service import create_app
    from tests.conftest import API_KEY, make_config

    bucket = f"video{time.time_ns()}"
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    app = create_app(make_config(tmp_path, storage=f"s3://{bucket}/dicom", s3_endpoint_url=moto_server,
                                 s3_region="us-east-1"))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    stream = video_stream("h264-ts", 1.0)
    ds, url = stored(client, video_instance(generate_uid(), generate_uid(), "h264-ts", stream=stream))
    assert client.get(f"{url}/rendered", headers={"Range": "bytes=10-19"}).data == stream[10:20]
    frame = client.get(f"{url}/frames/10/rendered", headers={"Accept": "image/png"})
    assert frame.status_code == 200 and Image.open(io.BytesIO(frame.data)).size == (320, 240)
    assert client.get(f"{url}/rendered", headers={"Accept": "video/mp4"}).data[4:8] == b"ftyp"
    for form in ("h264-mp4", "h264-mp4-index-last"):   # an MP4's index first: its start copied; last: all of it
        _, url = stored(client, video_instance(generate_uid(), generate_uid(), form, seconds=1.0))
        frame = client.get(f"{url}/frames/20/rendered", headers={"Accept": "image/png"})
        assert frame.status_code == 200 and Image.open(io.BytesIO(frame.data)).size == (320, 240)


def test_a_cine_of_50000_small_frames_is_refused_before_any_is_drawn(client):
    """Within the pixel and byte bounds (50,000 frames of 8×8), it took 17–21 s to make: the
    frame count is bounded before the answer starts, and named."""
    import time

    from transcode.video import MAX_VIDEO_FRAMES

    frames = 50_000
    _, url = stored(client, ct_instance(generate_uid(), generate_uid(), rows=8, columns=8, frames=frames,
                                        pixels=np.zeros((frames, 8, 8), np.uint16), FrameTime=10.0))
    start = time.perf_counter()
    for media_type in ("video/mp4", "video/mpeg", "image/gif"):   # an animated GIF too
        r = client.get(f"{url}/rendered", headers={"Accept": media_type})
        assert r.status_code == 413 and f"at most {MAX_VIDEO_FRAMES} frames" in r.get_json()["message"]
    assert time.perf_counter() - start < 2


def test_the_conversion_time_counts_from_the_first_frame(tmp_path, monkeypatch):
    """Frames that come slowly stop the encoder at its time limit, however many remain: the limit
    applied only once every frame was fed before."""
    import time

    from transcode import video

    monkeypatch.setattr(video, "FFMPEG_SECONDS", 1.0)

    def slow_frames():
        while True:
            time.sleep(0.05)
            yield Image.new("L", (16, 16))

    start = time.monotonic()
    with pytest.raises(video.VideoBusy, match="more than 1.0 s"):
        video.encode_video(slow_frames(), 40.0, tmp_path / "out.mp4")
    assert time.monotonic() - start < 2
    with pytest.raises(video.VideoError, match=f"at most {video.MAX_VIDEO_FRAMES} frames"):
        video.encode_video((Image.new("L", (2, 2)) for _ in range(video.MAX_VIDEO_FRAMES + 1)), 40.0,
                           tmp_path / "out.mp4")


def test_a_cine_is_made_into_video_by_a_worker_of_one_conversion_slot(tmp_path):
    """The frames are drawn inside the encoder's slot: with one slot a worker, no deadlock."""
    from service import create_app
    from tests.conftest import API_KEY, make_config

    app = create_app(make_config(tmp_path, transcode_slots=1, transcode_wait=2))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"ApiKey {API_KEY}"
    ds, url = stored(client, ct_instance(generate_uid(), generate_uid(), rows=32, columns=32, frames=5))
    r = client.get(f"{url}/rendered", headers={"Accept": "video/mp4"})
    assert r.status_code == 200 and r.data[4:8] == b"ftyp"


def test_an_anonymised_video_frame_is_annotated_from_the_anonymised_copy(client, monkeypatch):
    """A video that says it has no burnt-in text may be shown anonymised: its annotations come
    from the de-identified copy, as every image's do (the data set the picture is drawn with
    is looked at)."""
    import service.access.rendering as rendering

    drawn = []
    real = rendering.to_image
    monkeypatch.setattr(rendering, "to_image", lambda array, ds, how: (drawn.append(ds), real(array, ds, how))[1])
    data = read(video_instance(generate_uid(), generate_uid(), "h264-mp4", seconds=1.0))
    data.BurnedInAnnotation, data.PatientName = "NO", "Secret^Name"
    out = io.BytesIO()
    data.save_as(out, enforce_file_format=True)
    ds, url = stored(client, out.getvalue())
    r = client.get(f"{url}/frames/1/rendered?annotation=patient&anonymize=true", headers={"Accept": "image/png"})
    assert r.status_code == 200 and "Secret" not in str(drawn[-1].get("PatientName", ""))
    assert drawn[-1].PatientID != "PAT-1"
    client.get(f"{url}/frames/1/rendered?annotation=patient", headers={"Accept": "image/png"})
    assert str(drawn[-1].PatientName) == "Secret^Name"
