"""Frame codecs on generated images: every shape the issue names, through every encoder."""
import numpy as np
import pytest

from transcode.codecs import CodecError, PixelDescription, decode_frame, encode_frame, unsuitable

LOSSLESS = ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
            "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
            "1.2.840.10008.1.2.4.110"]
LOSSY = ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
         "1.2.840.10008.1.2.4.203", "1.2.840.10008.1.2.4.112"]


def image(rows, columns, samples=1, bits=16, stored=None, signed=False, seed=0):
    """A smooth gradient with noise, in the range the description allows."""
    stored = stored or bits
    low, high = (-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed else (0, (1 << stored) - 1)
    y, x = np.mgrid[0:rows, 0:columns]
    base = (np.sin(x / 9.0) * np.cos(y / 7.0) + 1) / 2 * (high - low) * 0.8 + low + (high - low) * 0.1
    noise = np.random.default_rng(seed).normal(0, (high - low) * 0.002, (rows, columns))
    values = np.clip(base + noise, low, high)
    if samples == 3:
        values = np.stack([values, values[::-1], values[:, ::-1]], axis=-1)
    dtype = f"<{'i' if signed else 'u'}{bits // 8}"
    return values.astype(dtype)


SHAPES = {
    "ct signed 16/12": (dict(rows=64, columns=64, bits=16, stored=12, signed=True), "MONOCHROME2"),
    "mr unsigned 16": (dict(rows=40, columns=48, bits=16), "MONOCHROME2"),
    "cr 16/12": (dict(rows=64, columns=40, bits=16, stored=12), "MONOCHROME1"),
    "8-bit odd size": (dict(rows=33, columns=47, bits=8), "MONOCHROME2"),
    "rgb": (dict(rows=48, columns=64, samples=3, bits=8), "RGB"),
    "rgb odd": (dict(rows=35, columns=37, samples=3, bits=8), "RGB"),
    "palette": (dict(rows=32, columns=32, bits=8), "PALETTE COLOR"),
    "ybr full": (dict(rows=40, columns=40, samples=3, bits=8), "YBR_FULL"),
    "signed 16": (dict(rows=40, columns=40, bits=16, signed=True), "MONOCHROME2"),
}


def describe(arguments, photometric, **changes):
    return PixelDescription(arguments["rows"], arguments["columns"], arguments.get("samples", 1), arguments["bits"],
                            arguments.get("stored") or arguments["bits"], int(arguments.get("signed", False)),
                            photometric, **changes)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", LOSSLESS + LOSSY)
def test_frame_round_trip(shape, target):
    arguments, photometric = SHAPES[shape]
    pixels = describe(arguments, photometric)
    reason = unsuitable(target, pixels)
    if reason:
        with pytest.raises(CodecError, match=reason[:20]):
            encode_frame(b"\0" * pixels.frame_length, pixels, target)
        return
    original = image(**arguments)
    data, carried = encode_frame(original.tobytes(), pixels, target)
    assert type(data) is bytes   # not a bytearray: WSGI servers send bytes only
    assert data and len(data) < pixels.frame_length * 1.2
    decoded, after = decode_frame(data, PixelDescription(**{**pixels.__dict__, "photometric_interpretation": carried}),
                                  target)
    assert type(decoded) is bytes
    result = np.frombuffer(decoded, original.dtype).reshape(original.shape)
    if photometric == "YBR_FULL" and after.photometric_interpretation == "RGB":
        return   # decoded to RGB, as decoders do for YCbCr: compared in the file round trips
    error = np.abs(result.astype(np.float64) - original.astype(np.float64))
    if target in LOSSLESS:
        assert error.max() == 0
    elif target.endswith(".81"):
        assert error.max() <= 2
    else:   # a bound that wrong colours, bit shifts or swapped bytes would break by far
        assert error.mean() < 0.05 * (float(original.max()) - float(original.min()))


def test_what_is_refused_and_why():
    mono16 = PixelDescription(64, 64, 1, 16, 16, 0, "MONOCHROME2")
    assert "8-bit" in unsuitable("1.2.840.10008.1.2.4.50", mono16)
    assert "12 bits" in unsuitable("1.2.840.10008.1.2.4.51", mono16)
    assert unsuitable("1.2.840.10008.1.2.4.51", PixelDescription(64, 64, 1, 16, 12, 0, "MONOCHROME2")) is None
    assert "palette" in unsuitable("1.2.840.10008.1.2.4.91", PixelDescription(64, 64, 1, 8, 8, 0, "PALETTE COLOR"))
    assert "32-bit" in unsuitable("1.2.840.10008.1.2.5", PixelDescription(64, 64, 1, 32, 32, 0, "MONOCHROME2"))
    assert "32 pixels" in unsuitable("1.2.840.10008.1.2.4.90", PixelDescription(16, 64, 1, 8, 8, 0, "MONOCHROME2"))
    assert "no encoder" in unsuitable("1.2.840.10008.1.2.4.100", mono16)
    assert unsuitable("1.2.840.10008.1.2.4.201", mono16) is None
    assert "unsigned" in unsuitable("1.2.840.10008.1.2.4.110", PixelDescription(64, 64, 1, 16, 16, 1, "MONOCHROME2"))
    assert "JPEG Baseline frames only" in unsuitable("1.2.840.10008.1.2.4.111", mono16)


def test_planar_configuration_one_is_interleaved_before_encoding():
    original = image(40, 40, samples=3, bits=8)
    planar = np.ascontiguousarray(original.transpose(2, 0, 1)).tobytes()
    pixels = PixelDescription(40, 40, 3, 8, 8, 0, "RGB", planar_configuration=1)
    data, _ = encode_frame(planar, pixels, "1.2.840.10008.1.2.4.80")
    decoded, _ = decode_frame(data, PixelDescription(40, 40, 3, 8, 8, 0, "RGB"), "1.2.840.10008.1.2.4.80")
    assert decoded == original.tobytes()


def test_a_frame_of_the_wrong_size_is_refused_before_any_codec_sees_it():
    with pytest.raises(CodecError, match="not the"):
        encode_frame(b"\0" * 100, PixelDescription(64, 64, 1, 16, 16, 0, "MONOCHROME2"), "1.2.840.10008.1.2.4.90")


def test_a_damaged_codestream_is_a_codec_error():
    pixels = PixelDescription(64, 64, 1, 16, 16, 0, "MONOCHROME2")
    for source in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"):
        with pytest.raises(CodecError):
            decode_frame(b"\xff\xd8 not a codestream", pixels, source)


def test_every_codec_is_safe_in_threads():
    """gunicorn's threads convert at once in one process: a codec that is not thread-safe
    crashes the worker. Run in a child process, so that a crash is a failure here."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(f"""
        import threading
        from tests.test_codecs import image
        from transcode.codecs import PixelDescription, decode_frame, encode_frame
        pixels = PixelDescription(256, 256, 1, 16, 12, 0, "MONOCHROME2")
        raw = image(256, 256, bits=16, stored=12).tobytes()
        for target in {LOSSLESS + LOSSY[1:]!r}:
            encoded = encode_frame(raw, pixels, target)[0]
            def work():
                for _ in range(8):
                    encode_frame(raw, pixels, target)
                    decode_frame(encoded, pixels, target)
            threads = [threading.Thread(target=work) for _ in range(4)]
            [t.start() for t in threads]
            [t.join() for t in threads]
        print("survived")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "survived" in run.stdout, (run.returncode, run.stderr[-2000:])


@pytest.mark.parametrize("shape", ["ct signed 16/12", "mr unsigned 16", "cr 16/12", "palette", "signed 16"])
@pytest.mark.parametrize("source", ["1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"])
def test_grey_lossless_jpeg_is_decoded_by_libjpeg_turbo_as_gdcm_decodes_it(shape, source):
    """Grey lossless JPEG goes to libjpeg-turbo (imagecodecs), twice GDCM's speed: its pixels are GDCM's."""
    from transcode.codecs import _gdcm_decode, _turbo_decode

    arguments, photometric = SHAPES[shape]
    pixels = describe(arguments, photometric)
    data, _ = encode_frame(image(**arguments, seed=3).tobytes(), pixels, source)
    turbo = _turbo_decode(data, pixels)
    assert turbo is not None
    assert turbo[0] == _gdcm_decode(data, pixels, source)[0] == decode_frame(data, pixels, source)[0]
    assert _turbo_decode(data[:2] + b"\xff\xc3 not a frame header", pixels) is None   # left to GDCM, which says why
