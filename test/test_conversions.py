"""ROS message <-> numpy conversions: every encoding, Bayer patterns, padding, byte order, compressed, plans."""

from __future__ import annotations

import array

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy and the message packages are not installed (pip install -e .[ros])")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from pwm_model.config import preset  # noqa: E402
from pwm_model.data import images  # noqa: E402
from pwm_model.errors import DataError  # noqa: E402
from pwm_model.geometry import PinholeCamera  # noqa: E402
from pwm_model.runtime.types import Plan  # noqa: E402
from pwm_ros import conversions  # noqa: E402
from pwm_ros.overlay import draw_path, project_path  # noqa: E402


def _smooth_rgb(h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth colour gradient (demosaicing and JPEG are close to exact on it)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([40 + 4 * xx, 60 + 5 * yy, 200 - 2 * xx - yy], axis=-1).clip(0, 255).astype(np.uint8)


def _image_msg(data: bytes, encoding: str, w: int, h: int, step: int, big: bool = False) -> Image:
    msg = Image(header=Header(frame_id="cam"), width=w, height=h, encoding=encoding, step=step,
                is_bigendian=int(big))
    msg.data = array.array("B", data)
    return msg


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a 2x2 colour filter array such as 'RGGB'."""
    out = np.zeros(rgb.shape[:2], np.uint8)
    for i, ch in enumerate(pattern):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(ch)]
    return out


@pytest.mark.parametrize("encoding", images.SUPPORTED_ENCODINGS)
@pytest.mark.parametrize("padding", [0, 6])
def test_shared_encodings_round_trip_with_padding(encoding: str, padding: int) -> None:
    rgb = _smooth_rgb()
    data, step = images.encode_image(rgb, encoding, row_padding_bytes=padding)
    out = conversions.image_to_rgb(_image_msg(data, encoding, rgb.shape[1], rgb.shape[0], step))
    expect = images.decode_image(data, encoding, rgb.shape[1], rgb.shape[0], step)
    np.testing.assert_array_equal(out, expect)  # the node decodes exactly as the data tools do
    if encoding in ("rgb8", "bgr8", "rgba8", "bgra8", "rgb16", "bgr16"):
        np.testing.assert_array_equal(out, rgb)


def test_rgb_to_image_round_trip() -> None:
    rgb = _smooth_rgb()
    msg = conversions.rgb_to_image(rgb, 1_234_567_890_123, "camera_front")
    assert (msg.width, msg.height, msg.encoding, msg.step) == (32, 24, "rgb8", 96)
    assert conversions.stamp_to_ns(msg.header.stamp) == 1_234_567_890_123
    np.testing.assert_array_equal(conversions.image_to_rgb(msg), rgb)


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GBRG", "GRBG"])
@pytest.mark.parametrize("bits", [8, 16])
def test_bayer_patterns_demosaic_to_the_right_colours(pattern: str, bits: int) -> None:
    rgb = _smooth_rgb()
    mosaic = _mosaic(rgb, pattern)
    encoding = f"bayer_{pattern.lower()}{bits}"
    for big in (False, True) if bits == 16 else (False,):
        if bits == 16:
            data = (mosaic.astype(np.uint16) * 257).astype(">u2" if big else "<u2").tobytes()
            step = 2 * mosaic.shape[1]
        else:
            pad = 4  # padded rows
            data = np.concatenate([mosaic, np.zeros((mosaic.shape[0], pad), np.uint8)], axis=1).tobytes()
            step = mosaic.shape[1] + pad
        out = conversions.image_to_rgb(_image_msg(data, encoding, mosaic.shape[1], mosaic.shape[0], step, big))
        assert out.shape == rgb.shape
        inner = np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2].astype(int))
        assert inner.max() <= 12, f"{encoding} big-endian={big}: colours off by {inner.max()}"


def test_constant_colour_bayer_is_exact() -> None:
    rgb = np.empty((8, 8, 3), np.uint8)
    rgb[:] = (200, 100, 50)
    out = conversions.image_to_rgb(_image_msg(_mosaic(rgb, "RGGB").tobytes(), "bayer_rggb8", 8, 8, 8))
    np.testing.assert_array_equal(out[2:-2, 2:-2], rgb[2:-2, 2:-2])  # a swapped pattern would give blue for red


@pytest.mark.parametrize(("msg_args", "match"), [
    (("rgb8", 0, 4, 0), "zero size"),
    (("rgb8", 4, 0, 12), "zero size"),
    (("rgb8", 4, 4, 12), "truncated"),
    (("rgb8", 4, 4, 8), "step"),
    (("bayer_rggb8", 4, 4, 4), "truncated"),
])
def test_bad_raw_images_raise_one_sentence(msg_args: tuple, match: str) -> None:
    encoding, w, h, step = msg_args
    with pytest.raises(DataError, match=match):
        conversions.image_to_rgb(_image_msg(bytes(10), encoding, w, h, step))


def test_unknown_encoding_without_cv_bridge_names_the_remedy() -> None:
    if conversions.cv_bridge_available():
        pytest.skip("cv_bridge is installed here: unknown encodings go through it")
    with pytest.raises(DataError, match="cv_bridge"):
        conversions.image_to_rgb(_image_msg(bytes(48), "32FC1", 2, 6, 8))


@pytest.mark.parametrize("encoding", [*images.SUPPORTED_ENCODINGS, *conversions.BAYER_CODES])
def test_native_decoding_matches_cv_bridge(encoding: str) -> None:
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge is not installed here (a ROS install or the "
                                                        "Docker image has it)")
    rgb = _smooth_rgb()
    if encoding in conversions.BAYER_CODES:
        bits = 16 if encoding.endswith("16") else 8
        mosaic = _mosaic(rgb, encoding[6:10].upper())
        data = (mosaic.astype("<u2") * 257).tobytes() if bits == 16 else mosaic.tobytes()
        msg = _image_msg(data, encoding, 32, 24, 32 * bits // 8)
    else:
        data, step = images.encode_image(rgb, encoding)
        msg = _image_msg(data, encoding, 32, 24, step)
    ours = conversions.image_to_rgb(msg).astype(int)
    theirs = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8").astype(int)
    assert np.abs(ours - theirs).max() <= 2, encoding  # rounding of YUV / 16-bit scaling may differ by one or two


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_round_trip(fmt: str) -> None:
    rgb = _smooth_rgb(32, 48)
    msg = conversions.rgb_to_compressed(rgb, 5, "cam", fmt, quality=95)
    assert fmt in msg.format
    out = conversions.compressed_to_rgb(msg)
    assert out.shape == rgb.shape
    tol = 0 if fmt == "png" else 10
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() <= max(tol, 0.5)


def test_corrupt_and_empty_compressed_images_raise() -> None:
    good = conversions.rgb_to_compressed(_smooth_rgb(), 0, "cam")
    bad = CompressedImage(format=good.format)
    bad.data = array.array("B", bytes(good.data)[: len(good.data) // 3])
    with pytest.raises(DataError):
        conversions.compressed_to_rgb(bad)
    junk = CompressedImage(format="jpeg")
    junk.data = array.array("B", b"\x00not a jpeg at all" * 4)
    with pytest.raises(DataError, match="corrupt"):
        conversions.compressed_to_rgb(junk)
    with pytest.raises(DataError, match="empty"):
        conversions.compressed_to_rgb(CompressedImage(format="jpeg"))


def _plan(k: int = 4) -> Plan:
    xyyaw = np.stack([np.arange(1, k + 1) * 2.0, np.linspace(0, 0.6, k), np.linspace(0, 0.3, k)], 1).astype(np.float32)
    t_ns = 10_000_000_000 + np.arange(1, k + 1, dtype=np.int64) * 500_000_000
    return Plan(t_ns=10_000_000_000, waypoints_xyyaw=xyyaw, waypoint_t_ns=t_ns, forecast_tokens=np.zeros((2, 8)),
                surprise=0.25)


def test_plan_to_path_stamps_frames_and_values() -> None:
    plan = _plan()
    path = conversions.plan_to_path(plan, "base_link")
    assert path.header.frame_id == "base_link"
    assert conversions.stamp_to_ns(path.header.stamp) == plan.t_ns
    xyyaw, t_ns = conversions.path_to_xyyaw(path)
    np.testing.assert_array_equal(t_ns, plan.waypoint_t_ns)
    np.testing.assert_allclose(xyyaw, plan.waypoints_xyyaw, atol=1e-6)
    assert all(p.header.frame_id == "base_link" for p in path.poses)


def test_stamp_conversion_round_trips_negative_and_large() -> None:
    for t in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        assert conversions.stamp_to_ns(conversions.ns_to_stamp(t)) == t


def test_markers_follow_the_plan() -> None:
    plan = _plan()
    arr = conversions.plan_to_markers(plan, "base_link")
    line, dots = arr.markers
    assert len(line.points) == len(plan.waypoints_xyyaw) + 1 and line.points[0].x == 0.0
    assert [p.x for p in dots.points] == pytest.approx(plan.waypoints_xyyaw[:, 0].tolist())
    assert {m.header.frame_id for m in arr.markers} == {"base_link"}


def test_diagnostic_array_levels_and_values() -> None:
    arr = conversions.diagnostic_array(5, "pwm_node: planner", "onnxruntime/cpu", 1, "warming up",
                                       {"plan_rate_hz": 9.87654, "dropped_frames": 3, "surprise": float("nan")})
    status = arr.status[0]
    assert status.level == b"\x01" and status.message == "warming up"
    assert {kv.key: kv.value for kv in status.values} == {"plan_rate_hz": "9.877", "dropped_frames": "3",
                                                          "surprise": "nan"}


def test_overlay_draws_the_path_where_the_camera_sees_it() -> None:
    cfg = preset("tiny").camera
    cam = PinholeCamera.from_config(cfg)
    rgb = np.zeros((cfg.height_px, cfg.width_px, 3), np.uint8)
    straight = np.array([[5.0 * k, 0.0, 0.0] for k in range(1, 9)])
    uv, visible = project_path(cam, straight)
    assert visible.any()
    out = draw_path(rgb, cam, straight)
    assert out.shape == rgb.shape and not rgb.any()  # input untouched
    changed = np.argwhere(out.any(axis=2))
    assert len(changed) > 0
    cols = changed[:, 1]
    assert abs(np.median(cols) - (cfg.width_px - 1) / 2) < cfg.width_px * 0.05  # straight ahead: image centre
    assert changed[:, 0].min() > cam.horizon_v() - 2  # below the horizon
    big = draw_path(np.zeros((2 * cfg.height_px, 2 * cfg.width_px, 3), np.uint8), cam, straight)
    assert big.any()  # the camera model is rescaled to the received image
