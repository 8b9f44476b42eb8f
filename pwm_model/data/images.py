"""Camera image encodings as ROS writes them, to and from ``(H, W, 3) uint8`` RGB numpy arrays.

Raw ``sensor_msgs/Image`` encodings: rgb8, bgr8, rgba8, bgra8, mono8, the packed 4:2:2 YUV orders (``yuv422`` /
``uyvy``: U Y0 V Y1; ``yuv422_yuy2`` / ``yuyv``: Y0 U Y1 V, as cv_bridge converts them, BT.601 limited range) and the
16-bit mono16, rgb16, bgr16 (either byte order, scaled to 8 bits). ``sensor_msgs/CompressedImage`` payloads (JPEG,
PNG) go through OpenCV. No torch and no ROS types here: ``pwm_ros`` hands in the message fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pwm_model.errors import DataError


@dataclass(frozen=True)
class _Encoding:
    channels: int  # samples per pixel as stored (yuv422: 2 bytes per pixel = 2 "channels" of uint8)
    depth_bytes: int  # bytes per sample


_ENCODINGS: dict[str, _Encoding] = {
    "rgb8": _Encoding(3, 1),
    "bgr8": _Encoding(3, 1),
    "rgba8": _Encoding(4, 1),
    "bgra8": _Encoding(4, 1),
    "mono8": _Encoding(1, 1),
    "yuv422": _Encoding(2, 1),  # UYVY (sensor_msgs/image_encodings.hpp: YUV422 = "yuv422")
    "uyvy": _Encoding(2, 1),
    "yuv422_yuy2": _Encoding(2, 1),  # YUYV
    "yuyv": _Encoding(2, 1),
    "mono16": _Encoding(1, 2),
    "rgb16": _Encoding(3, 2),
    "bgr16": _Encoding(3, 2),
}
_ALIASES = {"8uc1": "mono8", "8uc3": "bgr8", "8uc4": "bgra8", "16uc1": "mono16", "16uc3": "bgr16"}  # cv_bridge's view
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
_UYVY = ("yuv422", "uyvy")
_YUYV = ("yuv422_yuy2", "yuyv")


def _normalise_encoding(encoding: str) -> str:
    name = str(encoding).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in _ENCODINGS:
        raise DataError(f"image encoding {encoding!r} is not supported: use one of {', '.join(SUPPORTED_ENCODINGS)}")
    return name


def bytes_per_pixel(encoding: str) -> int:
    """Bytes one pixel takes in a raw image of this encoding (yuv422: 2)."""
    e = _ENCODINGS[_normalise_encoding(encoding)]
    return e.channels * e.depth_bytes


def _as_uint8_buffer(data: bytes | bytearray | memoryview | np.ndarray) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype != np.uint8 else data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def decode_image(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, width: int, height: int,
                 step: int, is_bigendian: bool = False) -> np.ndarray:
    """Decode a raw ``sensor_msgs/Image`` payload to a new ``(height, width, 3) uint8`` RGB array.

    Rows may be padded (``step`` larger than ``width`` times the bytes per pixel); 16-bit samples follow
    ``is_bigendian`` and are scaled to 8 bits; grey images are repeated into three channels.
    """
    name = _normalise_encoding(encoding)
    enc = _ENCODINGS[name]
    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise DataError(f"{encoding} image has zero size ({width}x{height} px)")
    row_bytes = width * enc.channels * enc.depth_bytes
    if step < row_bytes:
        raise DataError(f"{encoding} image step {step} is smaller than its width {width} px times "
                        f"{enc.channels * enc.depth_bytes} bytes per pixel ({row_bytes} bytes)")
    if name in _UYVY + _YUYV and width % 2:
        raise DataError(f"{encoding} image width {width} px is odd, but 4:2:2 YUV packs pixels in pairs")
    buf = _as_uint8_buffer(data)
    needed = step * (height - 1) + row_bytes
    if buf.size < needed:
        raise DataError(f"{encoding} image data is truncated: {width}x{height} px with step {step} needs "
                        f"{needed} bytes, got {buf.size}")
    if buf.size >= step * height:
        rows = buf[: step * height].reshape(height, step)[:, :row_bytes]
    else:  # last row without its padding
        rows = np.lib.stride_tricks.as_strided(buf, shape=(height, row_bytes), strides=(step, 1))
    if enc.depth_bytes == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        samples16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width, enc.channels)
        # round(v / 257): the inverse of the v8 * 257 expansion, so 8 -> 16 -> 8 bits is exact
        pixels = ((samples16.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    else:
        pixels = np.ascontiguousarray(rows).reshape(height, width, enc.channels)
    if name in ("rgb8", "rgb16"):
        return pixels.copy() if np.may_share_memory(pixels, buf) else pixels
    if name in ("bgr8", "bgr16"):
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if name == "rgba8":
        return cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB)
    if name == "bgra8":
        return cv2.cvtColor(pixels, cv2.COLOR_BGRA2RGB)
    if name in ("mono8", "mono16"):
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    if name in _UYVY:
        return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_UYVY)
    return cv2.cvtColor(pixels, cv2.COLOR_YUV2RGB_YUY2)


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise DataError(f"an image to encode must be a non-empty (H, W, 3) uint8 RGB array, got {rgb.dtype} "
                        f"{tuple(rgb.shape)}")
    return np.ascontiguousarray(rgb)


def encode_image(rgb: np.ndarray, encoding: str, *, row_padding_bytes: int = 0,
                 is_bigendian: bool = False) -> tuple[bytes, int]:
    """Encode an ``(H, W, 3) uint8`` RGB array as a raw ``sensor_msgs/Image`` payload; returns ``(data, step)``.

    8-bit values become 16-bit as ``v * 257`` (full scale), in the byte order ``is_bigendian`` names; grey is
    the BT.601 luma (OpenCV). ``row_padding_bytes`` appends zero bytes to every row (``step`` grows by as much).
    """
    name = _normalise_encoding(encoding)
    rgb = _check_rgb(rgb)
    if row_padding_bytes < 0:
        raise DataError(f"row_padding_bytes must not be negative, got {row_padding_bytes}")
    height, width = rgb.shape[:2]
    if name in _UYVY + _YUYV and width % 2:
        raise DataError(f"{encoding} image width {width} px is odd, but 4:2:2 YUV packs pixels in pairs")
    if name in ("rgb8", "rgb16"):
        pixels = rgb
    elif name in ("bgr8", "bgr16"):
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif name == "rgba8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif name == "bgra8":
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif name in ("mono8", "mono16"):
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    elif name in _UYVY:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_UYVY)
    else:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUY2)
    if _ENCODINGS[name].depth_bytes == 2:
        pixels = (pixels.astype(np.uint16) * 257).astype(">u2" if is_bigendian else "<u2")
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    if row_padding_bytes:
        rows = np.concatenate([rows, np.zeros((height, row_padding_bytes), np.uint8)], axis=1)
    return rows.tobytes(), int(rows.shape[1])


# ----------------------------------------------------------------------------------------------------
# sensor_msgs/CompressedImage

def _compressed_kind(fmt: str) -> str:
    """'jpeg' or 'png' from a CompressedImage ``format`` such as ``"rgb8; jpeg compressed bgr8"``."""
    text = str(fmt).strip().lower()
    if "png" in text:
        return "png"
    if "jpeg" in text or "jpg" in text:
        return "jpeg"
    raise DataError(f"compressed image format {fmt!r} is not supported: use jpeg or png")


def compressed_format_string(fmt: str, source_encoding: str = "rgb8") -> str:
    """The ``format`` field image_transport writes, e.g. ``"rgb8; jpeg compressed bgr8"``."""
    return f"{source_encoding}; {_compressed_kind(fmt)} compressed bgr8"


MAX_IMAGE_PIXELS = 50_000_000  # larger than any automotive camera (8K is 33 Mpx): a bigger header is refused unread
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG header declares, read without decoding; None when it cannot be found."""
    b = memoryview(buf).cast("B")  # no copy: JPEG segments are walked by their lengths
    if bytes(b[:8]) == b"\x89PNG\r\n\x1a\n" and len(b) >= 24:
        return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    i = 2 if bytes(b[:2]) == b"\xff\xd8" else len(b)
    while i + 9 <= len(b):
        if b[i] != 0xFF:
            return None
        marker, length = b[i + 1], int.from_bytes(b[i + 2:i + 4], "big")
        if marker == 0xDA:  # start of scan: the frame header always comes before it
            return None
        if marker in _JPEG_SOF:
            return int.from_bytes(b[i + 7:i + 9], "big"), int.from_bytes(b[i + 5:i + 7], "big")
        i += 2 + length
    return None


def decode_compressed(data: bytes | bytearray | memoryview | np.ndarray, fmt: str = "") -> np.ndarray:
    """Decode a JPEG or PNG ``sensor_msgs/CompressedImage`` payload to ``(H, W, 3) uint8`` RGB.

    ``fmt`` is the message's ``format`` field; an empty one lets OpenCV detect the codec. A header declaring more
    than ``MAX_IMAGE_PIXELS`` is refused before anything is decoded (a small file can declare gigabytes).
    """
    kind = _compressed_kind(fmt) if str(fmt).strip() else "image"
    buf = _as_uint8_buffer(data)
    if buf.size == 0:
        raise DataError(f"compressed {kind} image is empty")
    size = compressed_size(buf)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"compressed {kind} image of {buf.size} bytes declares {size[0]}x{size[1]} px, more than "
                        f"{MAX_IMAGE_PIXELS / 1e6:g} Mpx: refused before decoding")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise DataError(f"compressed {kind} image of {buf.size} bytes is corrupt and could not be decoded")
    if img.dtype == np.uint16:
        img = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise DataError(f"compressed {kind} image has unsupported sample type {img.dtype}")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode ``(H, W, 3) uint8`` RGB as JPEG (``quality`` 1-100) or PNG bytes, as image_transport does."""
    kind = _compressed_kind(fmt)
    rgb = _check_rgb(rgb)
    if not 1 <= int(quality) <= 100:
        raise DataError(f"JPEG quality must be between 1 and 100, got {quality}")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if kind == "jpeg":
        ok, out = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    else:
        ok, out = cv2.imencode(".png", bgr, [int(cv2.IMWRITE_PNG_COMPRESSION), 3])
    if not ok:  # pragma: no cover - OpenCV fails only on impossible inputs
        raise DataError(f"OpenCV could not encode a {rgb.shape[1]}x{rgb.shape[0]} image as {kind}")
    return out.tobytes()
