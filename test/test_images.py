"""Image encodings: raw sensor_msgs/Image payloads (every encoding, row padding, 16-bit byte orders) and JPEG/PNG."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pwm_model.data.images import (
    SUPPORTED_ENCODINGS,
    bytes_per_pixel,
    compressed_format_string,
    decode_compressed,
    decode_image,
    encode_compressed,
    encode_image,
)
from pwm_model.errors import DataError

LOSSLESS = ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16")
GREY = ("mono8", "mono16")
YUV = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")


def _random_rgb(h: int = 6, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_encoding_is_covered_by_the_groups() -> None:
    assert set(SUPPORTED_ENCODINGS) == set(LOSSLESS + GREY + YUV)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", LOSSLESS)
def test_lossless_round_trip(encoding: str, padding: int, big_endian: bool) -> None:
    rgb = _random_rgb()
    data, step = encode_image(rgb, encoding, row_padding_bytes=padding, is_bigendian=big_endian)
    assert step == 10 * bytes_per_pixel(encoding) + padding
    assert len(data) == step * 6
    out = decode_image(data, encoding, 10, 6, step, big_endian)
    assert out.dtype == np.uint8 and out.shape == (6, 10, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", GREY)
def test_grey_round_trip_gives_three_equal_channels(encoding: str, padding: int) -> None:
    grey = np.random.default_rng(1).integers(0, 256, (5, 7), dtype=np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    data, step = encode_image(rgb, encoding, row_padding_bytes=padding)
    out = decode_image(data, encoding, 7, 5, step)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("padding", [0, 4])
@pytest.mark.parametrize("encoding", YUV)
def test_yuv422_round_trip(encoding: str, padding: int) -> None:
    # chroma is shared by pixel pairs: pairs of equal colour survive up to rounding
    rgb = np.repeat(_random_rgb(4, 6, seed=2), 2, axis=1)
    data, step = encode_image(rgb, encoding, row_padding_bytes=padding)
    assert step == 12 * 2 + padding
    out = decode_image(data, encoding, 12, 4, step)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 3


def test_byte_layouts_match_the_ros_definitions() -> None:
    rgb = np.array([[[10, 20, 30], [40, 50, 60]]], np.uint8)
    assert encode_image(rgb, "rgb8")[0] == bytes([10, 20, 30, 40, 50, 60])
    assert encode_image(rgb, "bgr8")[0] == bytes([30, 20, 10, 60, 50, 40])
    assert encode_image(rgb, "bgra8")[0] == bytes([30, 20, 10, 255, 60, 50, 40, 255])
    # 16 bit: 8-bit v becomes v * 257, little or big endian
    assert encode_image(rgb[:, :1], "rgb16")[0] == bytes([10, 10, 20, 20, 30, 30])
    assert decode_image(bytes([0x12, 0x34]), "mono16", 1, 1, 2, is_bigendian=True)[0, 0, 0] == round(0x1234 / 257)
    assert decode_image(bytes([0x12, 0x34]), "mono16", 1, 1, 2, is_bigendian=False)[0, 0, 0] == round(0x3412 / 257)
    # UYVY vs YUYV: a grey pair (U = V = 128) decodes to grey; the two orders read the same bytes differently
    uyvy = bytes([128, 120, 128, 120])
    np.testing.assert_array_equal(decode_image(uyvy, "yuv422", 2, 1, 4), decode_image(uyvy, "uyvy", 2, 1, 4))
    grey = decode_image(uyvy, "yuv422", 2, 1, 4)
    assert np.ptp(grey) == 0
    yuyv = bytes([120, 128, 120, 128])
    np.testing.assert_array_equal(decode_image(yuyv, "yuv422_yuy2", 2, 1, 4), grey)
    np.testing.assert_array_equal(decode_image(yuyv, "yuyv", 2, 1, 4), grey)


def test_decode_accepts_numpy_and_memoryview_and_copies() -> None:
    rgb = _random_rgb()
    data, step = encode_image(rgb, "rgb8")
    buf = np.frombuffer(data, np.uint8).copy()
    out = decode_image(buf, "rgb8", 10, 6, step)
    buf[:] = 0  # the decoded image must not alias the message buffer
    np.testing.assert_array_equal(out, rgb)
    np.testing.assert_array_equal(decode_image(memoryview(data), "rgb8", 10, 6, step), rgb)


def test_last_row_without_padding_is_accepted() -> None:
    rgb = _random_rgb(3, 4)
    data, step = encode_image(rgb, "rgb8", row_padding_bytes=4)
    np.testing.assert_array_equal(decode_image(data[:-4], "rgb8", 4, 3, step), rgb)


@pytest.mark.parametrize(("args", "words"), [
    ((b"", "rgb8", 0, 4, 0), "zero size"),
    ((bytes(10), "rgb8", 4, 2, 12), "truncated"),
    ((bytes(100), "rgb8", 4, 2, 8), "step 8 is smaller"),
    ((bytes(100), "yuv422", 3, 2, 6), "odd"),
])
def test_bad_raw_images_give_one_sentence(args: tuple, words: str) -> None:
    with pytest.raises(DataError, match=words) as err:
        decode_image(*args)
    assert "\n" not in str(err.value)


def test_unknown_encoding_lists_the_supported_ones() -> None:
    with pytest.raises(DataError) as err:
        decode_image(bytes(16), "bayer_rggb8", 4, 4, 4)
    assert "bayer_rggb8" in str(err.value) and "rgb8" in str(err.value) and "yuv422" in str(err.value)
    with pytest.raises(DataError, match="not supported"):
        encode_image(_random_rgb(), "32FC1")


def test_encode_rejects_bad_arrays() -> None:
    with pytest.raises(DataError, match="uint8"):
        encode_image(np.zeros((4, 4, 3), np.float32), "rgb8")
    with pytest.raises(DataError, match="odd"):
        encode_image(_random_rgb(2, 3), "yuyv")


def _smooth_rgb(h: int = 32, w: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_png_round_trip_is_exact(fmt: str) -> None:
    rgb = _random_rgb(12, 16)
    np.testing.assert_array_equal(decode_compressed(encode_compressed(rgb, fmt), fmt), rgb)


@pytest.mark.parametrize("fmt", ["jpeg", "jpg", "rgb8; jpeg compressed bgr8", ""])
def test_jpeg_round_trip_keeps_colours(fmt: str) -> None:
    rgb = _smooth_rgb()
    data = encode_compressed(rgb, "jpeg", quality=95)
    assert data[:2] == b"\xff\xd8"
    out = decode_compressed(data, fmt)
    assert out.shape == rgb.shape
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 2.0  # RGB order kept (a swap would be ~100)


def test_compressed_grey_and_16_bit_png_decode_to_rgb() -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    ok, png = cv2.imencode(".png", grey)
    out = decode_compressed(png.tobytes(), "mono8; png compressed mono8")
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))
    ok, png16 = cv2.imencode(".png", grey.astype(np.uint16) * 257)
    np.testing.assert_array_equal(decode_compressed(png16.tobytes(), "16UC1; png compressed mono16")[..., 0], grey)


def test_compressed_format_strings() -> None:
    assert compressed_format_string("jpeg") == "rgb8; jpeg compressed bgr8"
    assert compressed_format_string("png", "bgr8") == "bgr8; png compressed bgr8"
    with pytest.raises(DataError, match="jpeg or png"):
        compressed_format_string("tiff")


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_corrupt_compressed_image_is_one_sentence(fmt: str) -> None:
    data = bytearray(encode_compressed(_smooth_rgb(), fmt))
    garbled = bytes(data[:20]) + bytes(len(data) - 20)
    truncated = bytes(data[: len(data) * 3 // 4])
    for bad in (garbled, truncated, b"not an image", b""):
        with pytest.raises(DataError) as err:
            decode_compressed(bad, fmt)
        assert "\n" not in str(err.value) and fmt in str(err.value)


def test_unsupported_compressed_format() -> None:
    with pytest.raises(DataError, match="tiff"):
        decode_compressed(b"abc", "tiff")


def test_compressed_headers_are_read_without_decoding_and_huge_ones_refused():
    from pwm_model.data import images
    from pwm_model.data.images import MAX_IMAGE_PIXELS, compressed_size
    from test.drive_helpers import huge_png_header

    rgb = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    for fmt in ("jpeg", "png"):
        data = images.encode_compressed(rgb, fmt)
        assert compressed_size(np.frombuffer(data, np.uint8)) == (53, 37)
        np.testing.assert_array_equal(images.decode_compressed(data, fmt).shape, (37, 53, 3))
    huge = huge_png_header(30000, 30000)
    assert 30000 * 30000 > MAX_IMAGE_PIXELS and len(huge) < 200
    with pytest.raises(DataError, match="declares 30000x30000 px.*refused before decoding"):
        images.decode_compressed(huge, "png")
    assert compressed_size(np.frombuffer(b"not an image at all", np.uint8)) is None
