"""The clip store: clips from a drive with known circular-arc motion match the analytic ego trajectory and boxes,
frames are aligned model_dt_s apart, the store round-trips (shards, workers) and refuses bad input clearly."""

from __future__ import annotations

import json
import math
import multiprocessing
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from pwm_model import cli
from pwm_model.data.bag import find_bags
from pwm_model.data.bag_writer import write_drive
from pwm_model.data.clip_builder import build_clip_store
from pwm_model.data.clips import ClipStore
from pwm_model.errors import DataError
from pwm_model.geometry import to_ego_frame, wrap_angle

from .drive_helpers import (
    CAR_VEL_MPS,
    T0_NS,
    YAW_RATE_RADPS,
    arc_drive,
    arc_pose,
    arc_relative,
    car_world,
    command_at,
    frame_image,
    image_msg,
    scenario_at,
    small_config,
    typestore,
    write_raw_bag,
)

CFG = small_config()
CAM, TOPICS, D = CFG.camera, CFG.data.topics, CFG.data
H, F, K, S, STEP = D.history_frames, D.future_frames, D.num_waypoints, D.frame_stride, D.clip_step_frames
N_FRAMES = 60
N_CLIPS = (N_FRAMES - 1 - (H + F) * S) // STEP + 1  # clip m: frames 2m .. 2m + 18
CTX_HW = (CFG.tokenizer.ctx_height_px, CFG.tokenizer.ctx_width_px)
SET_SMALL = ["--set", "camera.width_px=128", "--set", "camera.height_px=64", "--set", "tokenizer.ctx_height_px=32",
             "--set", "tokenizer.ctx_width_px=64", "--set", "tokenizer.dyn_height_px=16", "--set",
             "tokenizer.dyn_width_px=32", "--set", "data.shard_clips=8"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    bag = write_drive(root / "arc", arc_drive(N_FRAMES), CAM, TOPICS)
    meta = build_clip_store([bag], root / "store", CFG, progress=False)
    assert meta.num_clips == N_CLIPS == 21
    return root / "store"


def _centre(m: int) -> int:
    return m * STEP + H * S


def test_waypoints_and_history_match_the_analytic_arc(store_path: Path) -> None:
    store = ClipStore(store_path)
    for m in range(len(store)):
        clip = store[m]
        c = _centre(m)
        t_s = c / CAM.frame_rate_hz
        assert clip.t_ns == T0_NS + round(t_s * 1e9)
        # waypoints at k * 0.5 s in the ego frame at t; valid while the drive lasts (last odometry at 5.9 s)
        for k in range(K):
            dt = (k + 1) * D.waypoint_dt_s
            valid = t_s + dt <= (N_FRAMES - 1) / CAM.frame_rate_hz + 1e-9
            assert clip.waypoints_valid[k] == valid
            if valid:
                np.testing.assert_allclose(clip.waypoints_xyyaw[k], arc_relative(dt), atol=1e-4)
            else:
                np.testing.assert_array_equal(clip.waypoints_xyyaw[k], 0.0)
        # history poses at the H history frames (oldest first; the last is the ego itself)
        for j in range(H):
            np.testing.assert_allclose(clip.history_xyyaw[j], arc_relative(-(H - 1 - j) * CFG.model_dt_s), atol=1e-4)
        np.testing.assert_array_equal(clip.history_xyyaw[-1], 0.0)
        assert clip.speed_mps == pytest.approx(5.0) and clip.yaw_rate_radps == pytest.approx(YAW_RATE_RADPS)
        assert clip.accel_mps2 == pytest.approx(0.0, abs=1e-6)
        assert clip.command == command_at(c) and clip.scenario == scenario_at(c)
        assert clip.drive_id == "arc"
    assert not store[len(store) - 1].waypoints_valid[-1] and store[0].waypoints_valid.all()


def test_boxes_at_waypoint_times_in_the_ego_frame(store_path: Path) -> None:
    store = ClipStore(store_path)
    assert store.meta.max_boxes == 3
    for m in (0, 7, 20):
        clip = store[m]
        t_s = _centre(m) / CAM.frame_rate_hz
        ex, ey, eyaw = arc_pose(t_s)
        assert clip.boxes.shape == (K, 3, 7) and clip.boxes_valid.shape == (K, 3)
        for k in range(K):
            if not clip.waypoints_valid[k]:
                assert not clip.boxes_valid[k].any()
                continue
            tk = t_s + (k + 1) * D.waypoint_dt_s
            # the parked car exists on odd camera frames only: padding is masked
            assert clip.boxes_valid[k].sum() == (3 if (k + 1) % 2 else 2)
            car = clip.boxes[k, 0]
            np.testing.assert_allclose(car[:2], to_ego_frame(np.array(car_world(tk)), ex, ey, eyaw), atol=1e-3)
            assert car[2] == pytest.approx(0.8) and tuple(car[3:6]) == pytest.approx((4.5, 1.9, 1.6))
            assert car[6] == pytest.approx(wrap_angle(math.atan2(CAR_VEL_MPS[1], CAR_VEL_MPS[0]) - eyaw), abs=1e-5)
            np.testing.assert_array_equal(clip.boxes[k][~clip.boxes_valid[k]], 0.0)


def test_frames_are_aligned_model_dt_apart(store_path: Path) -> None:
    store = ClipStore(store_path)
    assert store.meta.clip_frames == 1 + H + F
    for m in (0, 1, 13, 20):
        clip = store[m]
        assert clip.frames_rgb.shape == (1 + H + F, *CTX_HW, 3) and clip.frames_rgb.dtype == np.uint8
        assert np.all(np.diff(clip.frame_t_ns) == round(CFG.model_dt_s * 1e9))
        assert clip.frame_t_ns[H] == clip.t_ns
        for j in range(1 + H + F):
            camera_frame = m * STEP + j * S  # guide = frame 0 of clip m; then every frame_stride camera frames
            want = cv2.resize(frame_image(camera_frame, 64, 128), CTX_HW[::-1], interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(clip.frames_rgb[j], want)
            assert clip.frame_t_ns[j] == T0_NS + camera_frame * 100_000_000


def test_store_round_trip_shards_and_index(store_path: Path) -> None:
    store = ClipStore(store_path)
    assert len(store) == 21 and store.meta.num_shards == 3
    assert [s["clips"] for s in store.meta.shards] == [8, 8, 5]
    assert sorted(p.name for p in store_path.iterdir()) == ["index.json", "shard_00000", "shard_00001",
                                                            "shard_00002"]
    frames = np.load(store_path / "shard_00000" / "frames.npy", mmap_mode="r")
    assert frames.shape[0] == 8 * STEP // S + H + F  # frames shared by overlapping clips are stored once
    assert store.scenario_counts == {"follow": 11, "cut_in": 10}
    assert sum(store.scenario_counts.values()) == len(store)
    index = json.loads((store_path / "index.json").read_text())
    assert index["format_version"] == 1 and index["num_clips"] == 21
    assert index["config"]["tokenizer"] == {"ctx_height_px": 32, "ctx_width_px": 64}
    assert index["config"]["data"]["frame_stride"] == S and index["config"]["camera"]["width_px"] == 128
    (drive,) = index["drives"]
    assert drive["drive_id"] == "arc" and drive["clips"] == 21 and drive["camera_frames"] == N_FRAMES
    assert len(drive["sha256"]) == 64 and drive["size_bytes"] > 0
    assert index["size_bytes"] == store.meta.size_bytes > 0
    a, b = store[-1], store[20]
    assert a.t_ns == b.t_ns and np.array_equal(a.frames_rgb, b.frames_rgb)
    with pytest.raises(IndexError):
        store[21]
    # the returned arrays are copies, not views of the read-only maps
    clip = store[3]
    clip.frames_rgb[:] = 0
    assert store[3].frames_rgb.any()


def _frame_sums(args: tuple[ClipStore, list[int]]) -> list[int]:
    store, idx = args
    return [int(store[i].frames_rgb.sum()) + int(store[i].t_ns % 1000003) for i in idx]


def test_store_is_shared_with_worker_processes(store_path: Path) -> None:
    store = ClipStore(store_path, max_open_shards=1)
    want = _frame_sums((store, list(range(len(store)))))  # the parent has maps open before forking
    copy = pickle.loads(pickle.dumps(store))
    assert _frame_sums((copy, [0, 20])) == [want[0], want[20]]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map(_frame_sums, [(store, list(range(0, 21, 2))), (store, list(range(1, 21, 2)))])
    assert got[0] == want[0::2] and got[1] == want[1::2]


def test_check_compatible(store_path: Path) -> None:
    store = ClipStore(store_path)
    store.check_compatible(CFG)
    for overrides, words in ((["tokenizer.ctx_height_px=64", "tokenizer.ctx_width_px=128"], "ctx image size 32x64"),
                             (["data.frame_stride=1"], "model frame interval"),
                             (["data.history_frames=6"], "history frames"),
                             (["data.waypoint_dt_s=0.25"], "waypoint interval")):
        with pytest.raises(DataError) as err:
            store.check_compatible(small_config(*overrides))
        assert words in str(err.value) and "pwm index" in str(err.value) and "\n" not in str(err.value)


def test_directory_of_bags_mixed_storages(tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    write_drive(bags / "a", arc_drive(24), CAM, TOPICS, storage="mcap")
    write_drive(bags / "more" / "b", arc_drive(24), CAM, TOPICS, storage="sqlite3", compressed=True,
                compressed_format="png")
    (bags / ".a.123.tmp").mkdir()  # an unfinished write is not a bag
    (bags / "README.txt").write_text("drives")
    assert [p.name for p in find_bags([bags])] == ["a", "b"]
    meta = build_clip_store([bags], tmp_path / "store", CFG, progress=False)
    assert [d["drive_id"] for d in meta.drives] == ["a", "b"]
    assert [d["storage"] for d in meta.drives] == ["mcap", "sqlite3"] and meta.num_clips == 6
    store = ClipStore(tmp_path / "store")
    a, b = store[1], store[4]
    assert (a.drive_id, b.drive_id) == ("a", "b") and a.t_ns == b.t_ns
    np.testing.assert_array_equal(a.frames_rgb, b.frames_rgb)  # png is lossless
    np.testing.assert_allclose(a.waypoints_xyyaw, b.waypoints_xyyaw)
    # the same bag twice, by two names, is indexed once; a rebuild replaces the store
    meta = build_clip_store([bags / "a", bags / "a" / "a.mcap", bags / "a"], tmp_path / "store", CFG, progress=False)
    assert len(meta.drives) == 2 and meta.drives[1]["drive_id"] == "a-2"


def test_dropped_camera_frames_skip_the_clips_across_the_gap(tmp_path: Path) -> None:
    bag = write_drive(tmp_path / "gap", arc_drive(N_FRAMES, skip=(30,)), CAM, TOPICS)
    meta = build_clip_store([bag], tmp_path / "store", CFG, progress=False)
    skipped = meta.drives[0]["skipped_clips"]["dropped_frames"]
    assert skipped > 0 and meta.num_clips + skipped == (N_FRAMES - 2 - (H + F) * S) // STEP + 1
    store = ClipStore(tmp_path / "store")
    gap_ns = T0_NS + 30 * 100_000_000
    for i in range(len(store)):
        t = store[i].frame_t_ns
        assert np.all(np.diff(t) == 200_000_000) and not (t[0] < gap_ns < t[-1])


def test_clip_builder_errors_leave_no_store(tmp_path: Path) -> None:
    out = tmp_path / "store"
    bag = write_drive(tmp_path / "arc", arc_drive(24), CAM, TOPICS)
    cases = [
        ([bag], small_config("camera.frame_rate_hz=20"), "camera.frame_rate_hz"),
        ([write_drive(tmp_path / "short", arc_drive(12), CAM, TOPICS)], CFG, "no clip fits"),
        ([tmp_path / "nope"], CFG, "does not exist"),
        ([bag, tmp_path / "arc" / "metadata.yaml"], CFG, "not a rosbag2 bag"),
    ]
    ts = typestore()
    data, step = (np.zeros(128 * 64 * 3, np.uint8).tobytes(), 128 * 3)
    no_odom = write_raw_bag(tmp_path / "no_odom", [
        (TOPICS.image, "sensor_msgs/msg/Image", T0_NS, image_msg(ts, T0_NS, data, "rgb8", 128, 64, step))])
    cases.append(([bag, no_odom], CFG, "no odometry on /odom"))
    for bags, cfg, words in cases:
        with pytest.raises(DataError) as err:
            build_clip_store(bags, out, cfg, progress=False)
        assert words in str(err.value) and "\n" not in str(err.value)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="refusing to overwrite"):
        build_clip_store([bag], tmp_path / "mine", CFG, progress=False)
    with pytest.raises(DataError, match="must not contain"):
        build_clip_store([bag], tmp_path, CFG, progress=False)


def test_corrupt_or_missing_store(store_path: Path, tmp_path: Path) -> None:
    import shutil

    with pytest.raises(DataError, match="does not exist"):
        ClipStore(tmp_path / "nope")
    with pytest.raises(DataError, match="not a clip store"):
        ClipStore(tmp_path)

    def broken(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(store_path, dst)
        return dst

    bad = broken("garbled_index")
    (bad / "index.json").write_text('{"format": "pwm-clip-store", "format_version": 1, "num_clips": ')
    with pytest.raises(DataError, match="corrupt"):
        ClipStore(bad)
    bad = broken("old_version")
    index = json.loads((bad / "index.json").read_text())
    index["format_version"] = 99
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match="format version 99"):
        ClipStore(bad)
    bad = broken("missing_shard")
    shutil.rmtree(bad / "shard_00001")
    with pytest.raises(DataError, match="shard_00001 is missing"):
        ClipStore(bad)
    bad = broken("missing_file")
    (bad / "shard_00000" / "boxes.npy").unlink()
    store = ClipStore(bad)
    assert store[10].t_ns > 0  # other shards still read
    with pytest.raises(DataError, match="boxes.npy is missing"):
        store[0]
    bad = broken("truncated_frames")
    f = bad / "shard_00002" / "frames.npy"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError) as err:
        ClipStore(bad)[20]
    assert "frames.npy" in str(err.value) and "\n" not in str(err.value)


def test_pwm_index_command(store_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_drive(tmp_path / "drives" / "arc", arc_drive(30), CAM, TOPICS, storage="sqlite3")
    out = tmp_path / "store"
    assert cli.main(["index", str(tmp_path / "drives"), "--out", str(out), *SET_SMALL]) == 0
    captured = capsys.readouterr()
    assert "wrote 6 clips from 1 drive(s) in 1 shard(s)" in captured.out and str(out) in captured.out
    assert "arc: 30 frames -> 6 clips" in captured.err
    assert len(ClipStore(out)) == 6
    assert bag.is_dir()
    # bad parameters: exit 2 with one sentence, nothing written
    rc = cli.main(["index", str(bag), "--out", str(tmp_path / "other"), "--set", "data.frame_stride=0"])
    assert rc == 2 and "frame_stride" in capsys.readouterr().err and not (tmp_path / "other").exists()


def _camera_only_bag(path: Path, n_frames: int = N_FRAMES) -> Path:
    """The arc drive's camera frames alone, at 10 Hz: no odometry, command, boxes or scenario topic."""
    ts = typestore()
    msgs = []
    for i in range(n_frames):
        t_ns = T0_NS + i * 100_000_000
        msgs.append((TOPICS.image, "sensor_msgs/msg/Image", t_ns,
                     image_msg(ts, t_ns, frame_image(i, 64, 128).tobytes(), "rgb8", 128, 64, 128 * 3)))
    return write_raw_bag(path, msgs)


def test_drives_without_odometry_index_into_a_store_without_labels(store_path: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    """docs/TRAINING.md: stores of drives without odometry serve pretraining. `pwm index` takes such bags (it used to
    refuse them); the store says it has no labels and the label reader (fine-tuning, `pwm eval`) refuses it."""
    from pwm_model.data.tokens import load_labels

    bag = _camera_only_bag(tmp_path / "cam_only")
    out = tmp_path / "store"
    assert cli.main(["index", str(bag), "--out", str(out), *SET_SMALL]) == 0
    err = capsys.readouterr().err
    assert "note: no bag has odometry on /odom" in err and "pretraining" in err
    store = ClipStore(out)
    assert len(store) == N_CLIPS and not store.meta.ego_labels and store.meta.drives[0]["odometry"] is False
    assert json.loads((out / "index.json").read_text())["ego_labels"] is False
    for m in (0, 20):
        clip = store[m]
        assert not clip.waypoints_valid.any() and not clip.boxes_valid.any()
        assert clip.speed_mps == 0.0 and clip.command == 1 and not clip.history_xyyaw.any()
        want = cv2.resize(frame_image(m * STEP, 64, 128), CTX_HW[::-1], interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(clip.frames_rgb[0], want)  # the frames are the drive's, as with odometry
    with pytest.raises(DataError, match="without odometry") as exc:
        load_labels(out)
    assert "pretrain" in str(exc.value) and "\n" not in str(exc.value)
    assert ClipStore(store_path).meta.ego_labels and len(load_labels(store_path)["ego"]) == N_CLIPS
    # one store never mixes drives with and without odometry
    labelled = write_drive(tmp_path / "arc", arc_drive(30), CAM, TOPICS)
    assert cli.main(["index", str(labelled), str(bag), "--out", str(tmp_path / "mixed"), *SET_SMALL]) == 2
    err = capsys.readouterr().err
    assert "cam_only has no odometry on /odom, but other bags given have" in err and "store of their own" in err
    assert not (tmp_path / "mixed").exists()


def test_pwm_index_camera_topic_names_the_camera_as_the_node_does(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`pwm index --camera-topic TOPIC`: Image on TOPIC or CompressedImage on TOPIC/compressed (pwm_node's
    camera_topic), instead of --set data.topics.image=... --set data.topics.compressed_image=..."""
    import dataclasses

    raw = write_drive(tmp_path / "raw", arc_drive(30), CAM, dataclasses.replace(TOPICS, image="/cam_left/image_raw"))
    jpeg = write_drive(tmp_path / "jpeg", arc_drive(30), CAM,
                       dataclasses.replace(TOPICS, compressed_image="/cam_left/image_raw/compressed"), compressed=True)
    assert cli.main(["index", str(raw), "--out", str(tmp_path / "s0"), "--quiet", *SET_SMALL]) == 2
    assert "has no camera topic /camera/front/image_raw" in capsys.readouterr().err
    for bag, topic in ((raw, "/cam_left/image_raw"), (jpeg, "/cam_left/image_raw"),
                       (jpeg, "/cam_left/image_raw/compressed")):
        out = tmp_path / f"store_{bag.name}_{topic.count('/')}"
        assert cli.main(["index", str(bag), "--out", str(out), "--quiet", "--camera-topic", topic, *SET_SMALL]) == 0
        assert len(ClipStore(out)) == 6
    assert cli.main(["index", str(raw), "--out", str(tmp_path / "s1"), "--camera-topic", "cam_left"]) == 2
    assert "--camera-topic 'cam_left' must be an absolute topic name" in capsys.readouterr().err


def test_pwm_index_takes_a_16_9_camera_and_says_it_crops(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 160x90 camera (16:9) for a 2:1 model: indexed (not refused), each frame centre-cropped to 160x80 (rows 5-84)
    and then resized, never squashed; the summary says so in one line and index.json records the camera. The
    config's camera size need not match the bag's."""
    wide = small_config("camera.width_px=160", "camera.height_px=90")
    samples = arc_drive(30, 90, 160)
    for x in samples:  # bands the crop removes: white on top, black at the bottom
        x.image_rgb[:5], x.image_rgb[85:] = 255, 0
    bag = write_drive(tmp_path / "wide", samples, wide.camera, TOPICS)
    out = tmp_path / "store"
    assert cli.main(["index", str(bag), "--out", str(out), "--quiet", *SET_SMALL]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("wrote 6 clips")
    assert lines[1:] == ["note: 1 drive(s): camera images are 160x90 px (1.78:1) but the model takes 2:1 (64x32 px): "
                         "each is centre-cropped to 160x80 px (rows 5-84), then resized (never squashed)"]
    store = ClipStore(out)
    cam = store.meta.drive_cameras()[0]
    assert (cam["width_px"], cam["height_px"], cam["topic"], cam["camera_info"]) == (160, 90, TOPICS.image, True)
    assert cam["model_window_px"] == {"top": 5, "left": 0, "rows": 80, "cols": 160}
    for m in (0, 5):
        clip = store[m]
        for j, t in enumerate(clip.frame_t_ns):
            i = round((int(t) - T0_NS) / 1e8)
            want = cv2.resize(frame_image(i, 80, 160), CTX_HW[::-1], interpolation=cv2.INTER_AREA)
            np.testing.assert_array_equal(clip.frames_rgb[j], want)  # the bands are gone: cropped, not squashed
