"""rosbag2 drives: write_drive / DriveReader round trips (mcap, sqlite3, raw and compressed), bags from another
writer (mcap + mcap-ros2-support), and clear errors for corrupt, incomplete or unsupported bags."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pwm_model import cli
from pwm_model.config import TopicsConfig
from pwm_model.data import images
from pwm_model.data.bag import DriveReader
from pwm_model.data.bag_writer import _MessageFactory, write_drive
from pwm_model.data.schema import Boxes, DriveSample, EgoState
from pwm_model.errors import ConfigError, DataError
from pwm_model.geometry import PinholeCamera

from .drive_helpers import (
    T0_NS,
    arc_drive,
    command_at,
    frame_image,
    image_msg,
    odom_msg,
    scenario_at,
    small_config,
    typestore,
    write_raw_bag,
)

CFG = small_config()
CAM, TOPICS = CFG.camera, CFG.data.topics


def _write(tmp_path: Path, n: int = 30, name: str = "drive", **kw) -> tuple[Path, list[DriveSample]]:
    samples = arc_drive(n)
    return write_drive(tmp_path / name, samples, CAM, TOPICS, **kw), samples


def test_round_trip_of_every_topic(tmp_path: Path) -> None:
    path, samples = _write(tmp_path, 45)
    assert sorted(p.name for p in path.iterdir()) == ["drive.mcap", "metadata.yaml"]
    assert [p.name for p in tmp_path.iterdir()] == ["drive"]  # no temporary leftovers
    r = DriveReader(path)
    s = r.summary
    assert s.storage == "mcap" and s.camera_topic == TOPICS.image and not s.camera_compressed
    assert (s.image_width_px, s.image_height_px, s.image_encoding, s.camera_frames) == (128, 64, "rgb8", 45)
    assert s.has_odometry and s.has_command and s.has_objects and s.has_scenario and s.has_camera_info
    assert s.canonical["compressed_image"] is False
    assert s.topics[TOPICS.odometry].msgtype == "nav_msgs/msg/Odometry" and s.topics[TOPICS.odometry].count == 45
    assert s.duration_s == pytest.approx(4.4)
    assert "camera" in s.describe() and TOPICS.objects in s.describe()

    # ego track as arrays
    ego = r.ego
    np.testing.assert_array_equal(ego.t_ns, [x.t_ns for x in samples])
    np.testing.assert_allclose(ego.x_m, [x.ego.x_m for x in samples], atol=1e-9)
    np.testing.assert_allclose(ego.y_m, [x.ego.y_m for x in samples], atol=1e-9)
    np.testing.assert_allclose(np.unwrap(ego.yaw_rad), [x.ego.yaw_rad for x in samples], atol=1e-9)
    np.testing.assert_allclose(ego.speed_mps, 5.0)
    np.testing.assert_allclose(ego.yaw_rate_radps, 0.2)
    np.testing.assert_allclose(ego.accel_mps2, 0.0, atol=1e-9)  # finite difference of a constant speed

    # commands: on change and at 1 Hz
    cmd_t = (r.commands.t_ns - T0_NS) / 1e9
    np.testing.assert_allclose(cmd_t, [0.0, 1.0, 2.0, 2.5, 3.5, 4.0])
    np.testing.assert_array_equal(r.commands.value, [1, 1, 1, 0, 0, 2])
    # scenario labels on change
    np.testing.assert_allclose((r.scenarios.t_ns - T0_NS) / 1e9, [0.0, 3.0])
    assert r.scenarios.labels == ["follow", "cut_in"]
    # boxes: one set per frame
    assert len(r.box_sets) == 45 and r.box_sets.max_boxes == 3
    b7 = r.box_sets.sets[7]
    np.testing.assert_allclose(b7.xyz_lwh_yaw, samples[7].boxes.xyz_lwh_yaw, atol=1e-5)
    np.testing.assert_array_equal(b7.track_ids, [5, 9, 11])
    assert b7.labels == ("car", "pole", "parked_car")
    # camera info from the pinhole model
    np.testing.assert_allclose(r.camera_info["K"], PinholeCamera.from_config(CAM).K)
    assert (r.camera_info["width_px"], r.camera_info["height_px"]) == (128, 64)

    # time-aligned samples
    out = list(r.samples())
    assert len(out) == 45
    for got, want in zip(out, samples):
        assert got.t_ns == want.t_ns and got.frame_index == want.frame_index
        np.testing.assert_array_equal(got.image_rgb, want.image_rgb)
        assert got.ego.x_m == pytest.approx(want.ego.x_m) and got.ego.y_m == pytest.approx(want.ego.y_m)
        assert math.remainder(got.ego.yaw_rad - want.ego.yaw_rad, 2 * math.pi) == pytest.approx(0, abs=1e-9)
        assert got.ego.speed_mps == pytest.approx(5.0)
        assert got.command == want.command and got.scenario == want.scenario
        np.testing.assert_array_equal(got.boxes.track_ids, want.boxes.track_ids)


def test_samples_stride_and_interpolation_between_odometry(tmp_path: Path) -> None:
    path, samples = _write(tmp_path, 20)
    r = DriveReader(path)
    out = list(r.samples(stride=3))
    assert [s.frame_index for s in out] == [0, 3, 6, 9, 12, 15, 18]
    # an ego state between two odometry messages is interpolated (x linear, yaw along the shorter arc)
    t_mid = (samples[4].t_ns + samples[5].t_ns) // 2
    mid = r.ego.state_at(t_mid)
    assert mid.x_m == pytest.approx((samples[4].ego.x_m + samples[5].ego.x_m) / 2)
    assert mid.yaw_rad == pytest.approx((samples[4].ego.yaw_rad + samples[5].ego.yaw_rad) / 2)
    # the latest command / scenario at or before a stamp
    assert r.commands.at(samples[19].t_ns) == command_at(19)
    assert r.commands.at(T0_NS - 1) == 1  # straight before the first command
    with pytest.raises(ConfigError):
        next(r.samples(stride=0))


CAMERA_MODES = [("raw", "rgb8"), ("raw", "bgr8"), ("raw", "mono8"), ("raw", "yuv422"), ("raw", "rgb16"),
                ("jpeg", ""), ("png", "")]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize(("mode", "encoding"), CAMERA_MODES)
def test_storages_and_camera_encodings(tmp_path: Path, storage: str, mode: str, encoding: str) -> None:
    compressed = mode != "raw"
    path, samples = _write(tmp_path, 6, storage=storage, compressed=compressed,
                           compressed_format=mode if compressed else "jpeg", encoding=encoding or "rgb8")
    assert (path / f"drive.{'db3' if storage == 'sqlite3' else 'mcap'}").is_file()
    r = DriveReader(path)
    assert r.summary.storage == storage and r.summary.camera_compressed == compressed
    assert r.summary.camera_topic == (TOPICS.compressed_image if compressed else TOPICS.image)
    assert r.summary.image_encoding == (f"rgb8; {mode} compressed bgr8" if compressed else encoding)
    got = [x.image_rgb.astype(int) for x in r.samples()]
    want = [x.image_rgb.astype(int) for x in samples]
    assert len(got) == 6
    if encoding == "mono8":  # BT.601 luma in all three channels
        want = [np.repeat(np.round(w @ [0.299, 0.587, 0.114])[..., None], 3, axis=2) for w in want]
    err = np.abs(np.stack(got) - np.stack(want))
    if mode == "jpeg":  # lossy: small on average (a channel swap would give ~100)
        assert err.mean() < 3.0
    else:
        assert err.max() <= {"mono8": 1, "yuv422": 3}.get(encoding, 0)


def test_every_raw_encoding_through_a_bag(tmp_path: Path) -> None:
    """One frame per encoding (row padding, 16-bit in both byte orders), each decoded by its own fields."""
    ts = typestore()
    rgb = np.repeat(frame_image(7, 64, 64), 2, axis=1)  # colour pairs: exact through 4:2:2 chroma
    cases = [(e, pad, big) for e in images.SUPPORTED_ENCODINGS for pad, big in ((0, False), (6, True))]
    msgs = []
    for k, (encoding, pad, big) in enumerate(cases):
        data, step = images.encode_image(rgb, encoding, row_padding_bytes=pad, is_bigendian=big)
        t_ns = T0_NS + k * 100_000_000
        msgs.append((TOPICS.image, "sensor_msgs/msg/Image", t_ns,
                     image_msg(ts, t_ns, data, encoding, 128, 64, step, big_endian=big)))
    r = DriveReader(write_raw_bag(tmp_path / "encodings", msgs))
    out = list(r.samples())
    assert len(out) == len(cases)
    grey = np.repeat(np.round(rgb.astype(float) @ [0.299, 0.587, 0.114])[..., None], 3, axis=2)
    for (encoding, _, _), sample in zip(cases, out):
        want = grey if encoding.startswith("mono") else rgb
        tol = 3 if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") else (1 if encoding.startswith("mono") else 0)
        assert np.abs(sample.image_rgb.astype(int) - want).max() <= tol, encoding


def test_single_storage_files_and_directories_without_metadata(tmp_path: Path) -> None:
    for storage, suffix in (("mcap", "mcap"), ("sqlite3", "db3")):
        path, samples = _write(tmp_path, 4, name=f"d_{storage}", storage=storage)
        file = path / f"d_{storage}.{suffix}"
        r = DriveReader(file)
        assert r.summary.camera_frames == 4 and r.summary.storage == storage
        np.testing.assert_array_equal(next(r.samples()).image_rgb, samples[0].image_rgb)
        (path / "metadata.yaml").unlink()  # a bag directory that lost its metadata: the storage file is read
        assert DriveReader(path).summary.camera_frames == 4


# ----------------------------------------------------------------------------------------------------
# Another writer: mcap + mcap-ros2-support with the ROS 2 message definitions

SEP = "=" * 80 + "\n"
TIME = "MSG: builtin_interfaces/Time\nint32 sec\nuint32 nanosec\n"
HEADER = "MSG: std_msgs/Header\nbuiltin_interfaces/Time stamp\nstring frame_id\n"
POSE = ("MSG: geometry_msgs/Pose\nPoint position\nQuaternion orientation\n" + SEP
        + "MSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\nfloat64 z\n" + SEP
        + "MSG: geometry_msgs/Quaternion\nfloat64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n")
VECTOR3 = "MSG: geometry_msgs/Vector3\nfloat64 x\nfloat64 y\nfloat64 z\n"
IMAGE_DEF = ("std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\n"
             "uint32 step\nuint8[] data\n" + SEP + HEADER + SEP + TIME)
ODOM_DEF = ("std_msgs/Header header\nstring child_frame_id\ngeometry_msgs/PoseWithCovariance pose\n"
            "geometry_msgs/TwistWithCovariance twist\n" + SEP + HEADER + SEP + TIME + SEP
            + "MSG: geometry_msgs/PoseWithCovariance\nPose pose\nfloat64[36] covariance\n" + SEP + POSE + SEP
            + "MSG: geometry_msgs/TwistWithCovariance\nTwist twist\nfloat64[36] covariance\n" + SEP
            + "MSG: geometry_msgs/Twist\nVector3 linear\nVector3 angular\n" + SEP + VECTOR3)
UINT8_DEF = "uint8 data\n"
STRING_DEF = "string data\n"
# the Humble-era Marker (before texture / mesh_file were added): another definition than the one pwm writes
MARKER_ARRAY_DEF = (
    "Marker[] markers\n" + SEP + "MSG: visualization_msgs/Marker\n"
    "int32 ARROW=0\nint32 CUBE=1\nint32 SPHERE=2\nint32 CYLINDER=3\nint32 TEXT_VIEW_FACING=9\n"
    "int32 ADD=0\nint32 MODIFY=0\nint32 DELETE=2\nint32 DELETEALL=3\n"
    "std_msgs/Header header\nstring ns\nint32 id\nint32 type\nint32 action\ngeometry_msgs/Pose pose\n"
    "geometry_msgs/Vector3 scale\nstd_msgs/ColorRGBA color\nbuiltin_interfaces/Duration lifetime\n"
    "bool frame_locked\ngeometry_msgs/Point[] points\nstd_msgs/ColorRGBA[] colors\nstring text\n"
    "string mesh_resource\nbool mesh_use_embedded_materials\n" + SEP + HEADER + SEP + TIME + SEP + POSE + SEP
    + VECTOR3 + SEP + "MSG: std_msgs/ColorRGBA\nfloat32 r\nfloat32 g\nfloat32 b\nfloat32 a\n" + SEP
    + "MSG: builtin_interfaces/Duration\nint32 sec\nuint32 nanosec\n")
CUSTOM_DEF = "float32 temperature_c\nstring[] notes\n"


def _stamp(t_ns: int) -> dict:
    return {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}


def _pose(x: float, y: float, z: float, yaw: float) -> dict:
    return {"position": {"x": x, "y": y, "z": z},
            "orientation": {"x": 0.0, "y": 0.0, "z": math.sin(yaw / 2), "w": math.cos(yaw / 2)}}


def _marker(t_ns: int, ns: str, marker_id: int, marker_type: int, action: int, box: list[float]) -> dict:
    return {"header": {"stamp": _stamp(t_ns), "frame_id": "odom"}, "ns": ns, "id": marker_id, "type": marker_type,
            "action": action, "pose": _pose(box[0], box[1], box[2], box[6]),
            "scale": {"x": box[3], "y": box[4], "z": box[5]}, "color": {"r": 1.0, "g": 0.0, "b": 0.0, "a": 1.0},
            "lifetime": {"sec": 0, "nanosec": 0}, "frame_locked": False, "points": [], "colors": [], "text": "",
            "mesh_resource": "", "mesh_use_embedded_materials": False}


def _write_foreign_mcap(path: Path, n: int = 12) -> dict:
    from mcap_ros2.writer import Writer

    expect: dict = {"t_ns": [], "x": [], "boxes": {}}
    with path.open("wb") as f:
        w = Writer(f)
        schemas = {name: w.register_msgdef(name, text) for name, text in (
            ("sensor_msgs/msg/Image", IMAGE_DEF), ("nav_msgs/msg/Odometry", ODOM_DEF),
            ("std_msgs/msg/UInt8", UINT8_DEF), ("visualization_msgs/msg/MarkerArray", MARKER_ARRAY_DEF),
            ("std_msgs/msg/String", STRING_DEF), ("my_robot/msg/Status", CUSTOM_DEF))}
        for i in range(n):
            t_ns = T0_NS + i * 100_000_000
            rgb = frame_image(i, 64, 128)
            data, step = images.encode_image(rgb, "bgr8", row_padding_bytes=16)
            # header stamps define time (received 5 ms later); frame 2 has no stamp: its receive time counts
            stamp = 0 if i == 2 else t_ns
            w.write_message(TOPICS.image, schemas["sensor_msgs/msg/Image"],
                            {"header": {"stamp": _stamp(stamp), "frame_id": "cam"}, "height": 64, "width": 128,
                             "encoding": "bgr8", "is_bigendian": 0, "step": step, "data": data},
                            log_time=t_ns if i == 2 else t_ns + 5_000_000)
            for half in (0, 1):  # odometry at 20 Hz, x = 2 m/s * t, yaw = 0.1 rad/s * t
                to = t_ns + half * 50_000_000
                x, yaw = 2.0 * (to - T0_NS) / 1e9, 0.1 * (to - T0_NS) / 1e9
                w.write_message(TOPICS.odometry, schemas["nav_msgs/msg/Odometry"],
                                {"header": {"stamp": _stamp(to), "frame_id": "odom"}, "child_frame_id": "base_link",
                                 "pose": {"pose": _pose(x, 1.0, 0.0, yaw), "covariance": [0.0] * 36},
                                 "twist": {"twist": {"linear": {"x": 2.0, "y": 0.0, "z": 0.0},
                                                     "angular": {"x": 0.0, "y": 0.0, "z": 0.1}},
                                           "covariance": [0.0] * 36}},
                                log_time=to + 3_000_000)
            if i % 5 == 0:
                w.write_message(TOPICS.command, schemas["std_msgs/msg/UInt8"], {"data": 2 if i >= 5 else 0},
                                log_time=t_ns)
            car = [10.0 + i, 3.0, 0.8, 4.2, 1.8, 1.5, 0.25]
            w.write_message(TOPICS.objects, schemas["visualization_msgs/msg/MarkerArray"], {"markers": [
                _marker(t_ns, "", 0, 1, 3, [0, 0, 0, 1, 1, 1, 0]),  # DELETEALL
                _marker(t_ns, "car", 42, 1, 0, car),
                _marker(t_ns, "label", 43, 9, 0, car),  # a text marker: not a box
            ]}, log_time=t_ns + 1_000_000)
            expect["boxes"][t_ns] = car
            w.write_message("/chatter", schemas["std_msgs/msg/String"], {"data": f"hello {i}"}, log_time=t_ns)
            w.write_message("/robot/status", schemas["my_robot/msg/Status"],
                            {"temperature_c": 40.0 + i, "notes": ["ok"]}, log_time=t_ns)
            expect["t_ns"].append(t_ns)
        w.finish()
    return expect


def test_bag_from_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "foreign.mcap"
    expect = _write_foreign_mcap(path)
    r = DriveReader(path)
    s = r.summary
    assert s.camera_frames == 12 and s.image_encoding == "bgr8" and s.has_odometry and not s.has_scenario
    assert "/chatter" in s.topics and s.topics["/robot/status"].msgtype == "my_robot/msg/Status"
    assert len(r.ego) == 24
    np.testing.assert_array_equal(r.ego.t_ns[:3], [T0_NS, T0_NS + 50_000_000, T0_NS + 100_000_000])  # header stamps
    np.testing.assert_allclose(r.ego.x_m, 2.0 * (r.ego.t_ns - T0_NS) / 1e9, atol=1e-9)
    np.testing.assert_allclose(r.ego.speed_mps, 2.0)
    np.testing.assert_array_equal(r.commands.value, [0, 2, 2])
    assert len(r.box_sets) == 12 and r.box_sets.max_boxes == 1
    samples = list(r.samples())
    assert [x.t_ns for x in samples] == expect["t_ns"]
    for i, x in enumerate(samples):
        np.testing.assert_array_equal(x.image_rgb, frame_image(i, 64, 128))
        assert x.ego.x_m == pytest.approx(2.0 * i / 10) and x.ego.y_m == pytest.approx(1.0)
        assert x.ego.yaw_rad == pytest.approx(0.1 * i / 10)
        assert x.command == (0 if i < 5 else 2)
        assert list(x.boxes.track_ids) == [42] and x.boxes.labels == ("car",)
        np.testing.assert_allclose(x.boxes.xyz_lwh_yaw[0], expect["boxes"][x.t_ns], atol=1e-5)


def test_boxes_in_the_ego_frame_and_odometry_without_twist(tmp_path: Path) -> None:
    ts = typestore()
    msgs = []
    for i in range(10):
        t_ns = T0_NS + i * 100_000_000
        yaw = 0.5
        x, y = 2.0 * math.cos(yaw) * i / 10, 2.0 * math.sin(yaw) * i / 10  # 2 m/s along the heading, no twist
        msgs.append((TOPICS.odometry, "nav_msgs/msg/Odometry", t_ns, odom_msg(ts, t_ns, x, y, yaw)))
        data, step = images.encode_image(frame_image(i, 64, 128), "rgb8")
        msgs.append((TOPICS.image, "sensor_msgs/msg/Image", t_ns, image_msg(ts, t_ns, data, "rgb8", 128, 64, step)))
    # one box 10 m ahead of the ego at t = 0.5 s, published in base_link
    t_box = T0_NS + 500_000_000
    arr = _MessageFactory().markers(t_box, Boxes(np.array([[10.0, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0]], np.float32),
                                 np.array([1], np.int32), ("car",)))
    for m in arr.markers:
        m.header.frame_id = "base_link"
    msgs.append((TOPICS.objects, "visualization_msgs/msg/MarkerArray", t_box, arr))
    path = write_raw_bag(tmp_path / "ego_boxes", msgs)
    r = DriveReader(path)
    np.testing.assert_allclose(r.ego.speed_mps, 2.0, atol=1e-6)
    np.testing.assert_allclose(r.ego.accel_mps2, 0.0, atol=1e-6)
    box = r.box_sets.at(t_box).xyz_lwh_yaw[0]
    ego = r.ego.state_at(t_box)
    assert box[0] == pytest.approx(ego.x_m + 10 * math.cos(0.5), abs=1e-4)
    assert box[1] == pytest.approx(ego.y_m + 10 * math.sin(0.5), abs=1e-4)
    assert box[6] == pytest.approx(0.5, abs=1e-6)
    assert len(r.box_sets.at(t_box - 1)) == 0  # nothing before the first set


def test_missing_odometry_is_allowed_by_the_reader(tmp_path: Path) -> None:
    ts = typestore()
    data, step = images.encode_image(frame_image(0, 64, 128), "rgb8")
    path = write_raw_bag(tmp_path / "no_odom", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS + k, image_msg(ts, T0_NS + k, data, "rgb8", 128, 64, step))
        for k in range(3)], storage="sqlite3")
    r = DriveReader(path)
    assert not r.summary.has_odometry and "odometry" in r.summary.describe()
    sample = next(r.samples())
    assert (sample.ego.x_m, sample.ego.speed_mps, sample.command) == (0.0, 0.0, 1)


# ----------------------------------------------------------------------------------------------------
# Errors


def _one_sentence(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def test_missing_and_non_bag_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        DriveReader(tmp_path / "nope")
    assert "does not exist" in _one_sentence(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        DriveReader(tmp_path / "empty")
    assert "not a rosbag2 bag" in _one_sentence(err)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a rosbag2 bag"):
        DriveReader(tmp_path / "notes.txt")
    (tmp_path / "bad_meta").mkdir()
    (tmp_path / "bad_meta" / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    with pytest.raises(DataError) as err:
        DriveReader(tmp_path / "bad_meta")
    assert "bad_meta" in _one_sentence(err)


def _corrupt(tmp_path: Path, kind: str) -> Path:
    storage = "sqlite3" if kind.startswith("db3") else "mcap"
    path, _ = _write(tmp_path, 8, name=f"bad_{kind}", storage=storage)
    file = path / f"bad_{kind}.{'db3' if storage == 'sqlite3' else 'mcap'}"
    data = bytearray(file.read_bytes())
    if kind.endswith("truncated"):
        data = data[: len(data) // 2]
    else:  # garble the records after the magic bytes
        data[8:264] = b"\xa5" * 256
    file.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kind", ["mcap_garbled", "db3_truncated", "db3_garbled"])
def test_corrupt_bags_give_one_sentence(tmp_path: Path, kind: str) -> None:
    path = _corrupt(tmp_path, kind)
    with pytest.raises(DataError) as err:
        DriveReader(path)
    text = _one_sentence(err)
    assert str(path) in text and "corrupt or truncated" in text


def test_a_cut_off_mcap_recording_is_read_up_to_the_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, samples = _write(tmp_path, 40, name="cut")
    file = path / "cut.mcap"
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * 0.6)])  # the recorder died: no summary, no footer
    with caplog.at_level("WARNING"):
        r = DriveReader(path)
    assert "cut off" in r.cut_off_note and "whole messages" in r.cut_off_note
    assert any("cut off" in rec.getMessage() for rec in caplog.records)
    kept = list(r.frames())
    assert 5 <= len(kept) < 40 == len(samples)
    for (_, t_ns, rgb), s in zip(kept, samples):  # what is there is what was recorded
        assert t_ns == s.t_ns and np.array_equal(rgb, s.image_rgb)
    file.write_bytes(data[:20])  # nothing whole left: one sentence, as before
    with pytest.raises(DataError, match="corrupt or truncated"):
        DriveReader(path)


def _no_camera_bag(tmp_path: Path) -> Path:
    ts = typestore()
    return write_raw_bag(tmp_path / "no_camera", [
        (TOPICS.odometry, "nav_msgs/msg/Odometry", T0_NS, odom_msg(ts, T0_NS, 0.0, 0.0, 0.0)),
        ("/chatter", "std_msgs/msg/String", T0_NS, ts.types["std_msgs/msg/String"](data="hi"))])


def test_missing_camera_topic_names_it_and_lists_the_bag(tmp_path: Path) -> None:
    path = _no_camera_bag(tmp_path)
    with pytest.raises(DataError) as err:
        DriveReader(path)
    text = _one_sentence(err)
    assert TOPICS.image in text and TOPICS.compressed_image in text
    assert "/chatter (std_msgs/msg/String)" in text and "/odom (nav_msgs/msg/Odometry)" in text
    r = DriveReader(path, require_camera=False)
    assert r.summary.camera_topic is None and r.summary.has_odometry
    # another camera topic name through TopicsConfig
    with pytest.raises(DataError, match="/front/rgb"):
        DriveReader(path, TopicsConfig(image="/front/rgb"))


def _bayer_bag(tmp_path: Path) -> Path:
    ts = typestore()
    return write_raw_bag(tmp_path / "bayer", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS, image_msg(ts, T0_NS, bytes(128 * 64), "bayer_rggb8", 128,
                                                                 64, 128)),
        (TOPICS.odometry, "nav_msgs/msg/Odometry", T0_NS, odom_msg(ts, T0_NS, 0.0, 0.0, 0.0))])


def test_unsupported_encoding(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        DriveReader(_bayer_bag(tmp_path))
    text = _one_sentence(err)
    assert "bayer_rggb8" in text and "rgb8" in text and TOPICS.image in text


def test_wrong_message_type_on_a_canonical_topic(tmp_path: Path) -> None:
    ts = typestore()
    data, step = images.encode_image(frame_image(0, 64, 128), "rgb8")
    path = write_raw_bag(tmp_path / "wrong_type", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS, image_msg(ts, T0_NS, data, "rgb8", 128, 64, step)),
        (TOPICS.odometry, "std_msgs/msg/String", T0_NS, ts.types["std_msgs/msg/String"](data="x"))])
    with pytest.raises(DataError) as err:
        DriveReader(path)
    text = _one_sentence(err)
    assert TOPICS.odometry in text and "std_msgs/msg/String" in text and "nav_msgs/msg/Odometry" in text


def test_bad_route_command_value(tmp_path: Path) -> None:
    ts = typestore()
    data, step = images.encode_image(frame_image(0, 64, 128), "rgb8")
    path = write_raw_bag(tmp_path / "bad_cmd", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS, image_msg(ts, T0_NS, data, "rgb8", 128, 64, step)),
        (TOPICS.command, "std_msgs/msg/UInt8", T0_NS, ts.types["std_msgs/msg/UInt8"](data=7))])
    with pytest.raises(DataError, match="route command 7"):
        DriveReader(path)


def test_non_finite_odometry(tmp_path: Path) -> None:
    ts = typestore()
    data, step = images.encode_image(frame_image(0, 64, 128), "rgb8")
    path = write_raw_bag(tmp_path / "nan_odom", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS, image_msg(ts, T0_NS, data, "rgb8", 128, 64, step)),
        (TOPICS.odometry, "nav_msgs/msg/Odometry", T0_NS, odom_msg(ts, T0_NS, 0.0, 0.0, 0.0)),
        (TOPICS.odometry, "nav_msgs/msg/Odometry", T0_NS + 10, odom_msg(ts, T0_NS + 10, math.nan, 0.0, 0.0))])
    with pytest.raises(DataError) as err:
        DriveReader(path)
    assert "1 odometry message(s) on /odom" in _one_sentence(err) and "NaN" in str(err.value)


def test_write_drive_failure_leaves_nothing(tmp_path: Path) -> None:
    samples = arc_drive(6)
    samples[4].image_rgb = np.zeros((10, 10, 3), np.uint8)  # a frame of the wrong size half-way
    with pytest.raises(DataError, match="sample 4"):
        write_drive(tmp_path / "drive", samples, CAM, TOPICS)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataError, match="increase"):
        write_drive(tmp_path / "drive", [arc_drive(2)[1], arc_drive(2)[0]], CAM, TOPICS)
    with pytest.raises(DataError, match="no drive samples"):
        write_drive(tmp_path / "drive", [], CAM, TOPICS)
    with pytest.raises(ConfigError, match="storage"):
        write_drive(tmp_path / "drive", samples, CAM, TOPICS, storage="rosbag1")
    with pytest.raises(DataError, match="not supported"):
        write_drive(tmp_path / "drive", samples, CAM, TOPICS, encoding="bayer_rggb8")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="refusing to overwrite"):
        write_drive(tmp_path / "keep", arc_drive(2), CAM, TOPICS)
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_write_drive_replaces_an_older_bag(tmp_path: Path) -> None:
    _write(tmp_path, 3)
    path, _ = _write(tmp_path, 5)
    assert DriveReader(path).summary.camera_frames == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive"]


def test_scenario_absent_and_ego_defaults(tmp_path: Path) -> None:
    samples = [DriveSample(t_ns=T0_NS + k * 100_000_000, image_rgb=frame_image(k, 64, 128),
                           ego=EgoState(T0_NS + k * 100_000_000, 0.0, 0.0, 0.0), command=1, boxes=Boxes())
               for k in range(3)]
    r = DriveReader(write_drive(tmp_path / "plain", samples, CAM, TOPICS))
    assert not r.summary.has_scenario and r.box_sets.max_boxes == 0
    assert all(x.scenario == "" and len(x.boxes) == 0 for x in r.samples())
    assert scenario_at(0) == "follow"  # the helper's labels, used elsewhere


@pytest.mark.parametrize("case", ["corrupt", "no_camera", "bayer", "missing"])
def test_pwm_index_on_bad_bags_exits_2_and_writes_nothing(tmp_path: Path, case: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    bags = tmp_path / "bags"
    bags.mkdir()
    if case == "corrupt":
        bag = _corrupt(bags, "mcap_garbled")
    elif case == "no_camera":
        bag = _no_camera_bag(bags)
    elif case == "bayer":
        bag = _bayer_bag(bags)
    else:
        bag = bags / "missing"
    out = tmp_path / "store"
    rc = cli.main(["index", str(bag), "--out", str(out), "--quiet", "--set", "camera.width_px=128",
                   "--set", "camera.height_px=64"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: ") and str(bag) in err[-1]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bags"]  # no temporary store left either
    if case != "missing":
        shutil.rmtree(bag)
