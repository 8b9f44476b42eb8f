"""Distribution shifts of the synthetic world: they change the look (or the rendering camera) and nothing else, the
default is the nominal world unchanged, each shift is outside what the training world samples, and ``pwm gen-data
--shift`` records the shift per drive."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pwm_model.cli import main as pwm_main
from pwm_model.config import CameraConfig
from pwm_model.data.synthetic import SHIFTS, Renderer, World, simulate_drive
from pwm_model.data.synthetic.appearance import Appearance, sample_appearance
from pwm_model.data.synthetic.scenery import empty_scenery
from pwm_model.data.synthetic.shift import (
    MOUNT_DZ_M,
    MOUNT_PITCH_DOWN_DEG,
    MOUNT_ROLL_DEG,
    ShiftedRenderer,
    render_mount,
    shift_appearance,
)
from pwm_model.errors import ConfigError
from pwm_model.geometry import PinholeCamera, Pose3

SMALL = CameraConfig(width_px=64, height_px=32)
MID = CameraConfig(width_px=160, height_px=90)
SEEDS = (1, 2, 7)  # day, night (foggy), day with traffic


def _drive(seed: int, shift: str | None, seconds: float = 1.0, cam: CameraConfig = SMALL, **kw) -> list:
    return list(simulate_drive(seed, seconds, cam, shift=shift, **kw))


def _ground(img: np.ndarray) -> np.ndarray:
    """The bottom quarter of the image (near ground: grass, shoulders, asphalt) as (N, 3) floats."""
    return img[-img.shape[0] // 4:].reshape(-1, 3).astype(float)


def test_the_shifts():
    assert {"snow", "sodium", "camera_mount"} <= set(SHIFTS)


def test_without_a_shift_the_drive_is_the_nominal_one():
    """shift=None (the default) renders exactly what the world rendered before shifts existed."""
    default, explicit = _drive(5, None, 0.5), list(simulate_drive(5, 0.5, SMALL))
    world = World(5, SMALL, seconds=0.5)
    assert type(world.renderer()) is Renderer
    plain = Renderer(SMALL, world.road, world.scenery, world.appearance)
    for k, (a, b) in enumerate(zip(default, explicit)):
        if k:
            world.step_frame()
        np.testing.assert_array_equal(a.image_rgb, b.image_rgb)
        np.testing.assert_array_equal(a.image_rgb, world.render(plain))


@pytest.mark.parametrize("shift", ("snow", "sodium", "camera_mount"))
def test_a_shift_changes_the_look_and_nothing_else(shift):
    for seed in (2, 7):
        nominal, shifted = _drive(seed, None, 1.5, scenario="cut_in"), _drive(seed, shift, 1.5, scenario="cut_in")
        assert len(nominal) == len(shifted) == 15
        diff = []
        for a, b in zip(nominal, shifted):
            assert (a.t_ns, a.frame_index, a.command, a.scenario) == (b.t_ns, b.frame_index, b.command, b.scenario)
            assert a.ego == b.ego
            assert a.boxes.labels == b.boxes.labels
            np.testing.assert_array_equal(a.boxes.track_ids, b.boxes.track_ids)
            np.testing.assert_array_equal(a.boxes.xyz_lwh_yaw, b.boxes.xyz_lwh_yaw)
            assert a.image_rgb.shape == b.image_rgb.shape
            diff.append(np.abs(a.image_rgb.astype(float) - b.image_rgb).mean())
        assert min(diff) > 5.0, (shift, seed, diff)


def test_snow_is_bright_ground_bluish_asphalt_and_a_pale_sky():
    for seed in SEEDS:
        nominal, snow = _drive(seed, None, 0.1, MID)[0].image_rgb, _drive(seed, "snow", 0.1, MID)[0].image_rgb
        assert _ground(snow).mean() > _ground(nominal).mean() + 50
        road = snow[-4:, 70:90].reshape(-1, 3).astype(float).mean(axis=0)  # asphalt just ahead of the ego
        assert road[2] > road[0] + 10 and 120 < road.mean() < 220, road
        sky = snow[:6].reshape(-1, 3).astype(float).mean(axis=0)
        assert sky.min() > 180 and sky.max() - sky.min() < 25, sky  # pale and nearly grey
    # outside the training world: its grass and shoulders never come near white
    rng = np.random.default_rng(0)
    sampled = [sample_appearance(rng) for _ in range(400)]
    snow = shift_appearance(Appearance(), "snow")
    assert max(max(a.grass_patch) for a in sampled) < min(snow.grass) - 40
    assert max(max(a.shoulder) for a in sampled) < min(snow.shoulder) - 40


def test_sodium_is_an_orange_monochrome():
    for seed in SEEDS:
        img = _drive(seed, "sodium", 0.1, MID)[0].image_rgb.reshape(-1, 3).astype(float)
        r, g, b = img.mean(axis=0)
        assert r > 1.5 * g and g > 3.0 * b and r > 40, (r, g, b)
        assert np.all(img[:, 0] >= img[:, 1]) and np.all(img[:, 1] >= img[:, 2])
        lit = img[(img[:, 0] > 40) & (img[:, 0] < 250)]  # not clipped: one hue everywhere
        assert len(lit) > 100 and np.ptp(lit[:, 1] / lit[:, 0]) < 0.05
    # the nominal world has no such image: its day and night frames are far from one hue
    for seed in SEEDS:
        img = _drive(seed, None, 0.1, MID)[0].image_rgb.reshape(-1, 3).astype(float)
        r, g, b = img.mean(axis=0)
        assert not (r > 1.5 * g and g > 3.0 * b)


def _flat_world(shift: str | None) -> World:
    """A drive with a uniform blue sky over green ground, no hills, haze or roadside objects."""
    world = World(3, MID, seconds=0.5, shift=shift)
    green = (0.0, 255.0, 0.0)
    world.appearance = Appearance(sky_top=(0.0, 0.0, 255.0), sky_horizon=(0.0, 0.0, 255.0), hills=green,
                                  hill_height_rad=0.0, grass=green, grass_patch=green, asphalt=green, shoulder=green,
                                  marking=green, divider=green, fog=green, fog_dist_m=1e15)
    world.scenery = empty_scenery()
    return world


def _horizon_rows(img: np.ndarray) -> np.ndarray:
    """Per column, the continuous row where sky turns into ground (number of sky rows, anti-aliasing included)."""
    sky_fraction = img[..., 2].astype(float) / 255.0
    return sky_fraction.sum(axis=0) - 0.5


def test_camera_mount_moves_and_rolls_the_horizon():
    nominal = _flat_world(None)
    shifted = _flat_world("camera_mount")
    h0 = _horizon_rows(nominal.render(nominal.renderer(), []))
    h1 = _horizon_rows(shifted.render(shifted.renderer(), []))
    fx_px = (MID.width_px / 2) / math.tan(math.radians(MID.hfov_deg) / 2)
    pitch = math.radians(MID.pitch_down_deg)
    up_px = fx_px * (math.tan(pitch + math.radians(MOUNT_PITCH_DOWN_DEG)) - math.tan(pitch))
    mid = MID.width_px // 2
    assert abs(h0[5] - h0[-6]) < 0.3  # the nominal horizon is level
    assert (h0[mid - 1:mid + 1].mean() - h1[mid - 1:mid + 1].mean()) == pytest.approx(up_px, abs=1.0)
    tilt_px = (h1[5] - h1[-6]) / (MID.width_px - 11)  # positive roll: the horizon rises to the right
    assert tilt_px == pytest.approx(math.tan(math.radians(MOUNT_ROLL_DEG)), abs=0.01)


def test_camera_mount_renders_with_the_moved_camera_and_keeps_the_model_config():
    cam, roll_rad = render_mount(MID, "camera_mount")
    assert cam.pitch_down_deg == MID.pitch_down_deg + MOUNT_PITCH_DOWN_DEG
    assert cam.mount_z_m == MID.mount_z_m + MOUNT_DZ_M and roll_rad == pytest.approx(math.radians(MOUNT_ROLL_DEG))
    assert render_mount(MID, None) == render_mount(MID, "snow") == (MID, 0.0)
    world = World(4, MID, seconds=0.5, shift="camera_mount")
    assert world.camera == MID  # the world (and the model) keep their camera
    renderer = world.renderer()
    assert isinstance(renderer, ShiftedRenderer)
    assert renderer.render(world.ego.x_m, world.ego.y_m, world.ego.yaw_rad, []).shape == (90, 160, 3)
    # its projection is the exact pinhole with pitch, roll and height (ego at the origin: base_link = world)
    base = PinholeCamera.from_config(cam)
    optical_from_body = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    rot = Pose3.from_xyz_rpy(0, 0, 0, roll_rad, math.radians(cam.pitch_down_deg), 0).rotation @ optical_from_body.T
    exact = dataclasses.replace(base, base_from_camera=Pose3(rot, base.base_from_camera.translation))
    pts = np.array([[30.0, 8.0, 0.0], [30.0, -8.0, 0.0], [100.0, 20.0, 2.0], [6.0, -2.0, 0.3], [1e5, 4e4, 0.0]])
    uv, front = renderer.project_world(pts, 0.0, 0.0, 0.0)
    want, _ = exact.project(pts)
    assert front.all()
    np.testing.assert_allclose(uv, want, atol=1e-6)


def test_an_unknown_shift_raises_one_sentence(tmp_path: Path, capsys):
    for call in (lambda: simulate_drive(0, 1.0, SMALL, shift="fog"), lambda: World(0, SMALL, shift="rain")):
        with pytest.raises(ConfigError, match=r"^unknown shift '\w+': choose one of snow, sodium, camera_mount$"):
            call()
    with pytest.raises(SystemExit) as exit_info:
        pwm_main(["gen-data", "--out", str(tmp_path / "x"), "--seed", "0", "--shift", "fog"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fog'" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_gen_data_records_the_shift(tmp_path: Path, capsys):
    out = tmp_path / "snow"
    assert pwm_main(["gen-data", "--out", str(out), "--scenes", "1", "--seconds", "0.3", "--seed", "7",
                     "--width", "64", "--height", "32", "--shift", "snow"]) == 0
    assert "[1/1] drive_seed7: 3 frames, 64x32 px, day, shift snow; " in capsys.readouterr().err
    scene = json.loads((out / "scenes.json").read_text())["scenes"][0]
    assert scene["shift"] == "snow" and scene["time_of_day"] == "day" and "render_mount" not in scene
    out = tmp_path / "mount"
    assert pwm_main(["gen-data", "--out", str(out), "--scenes", "1", "--seconds", "0.2", "--seed", "7",
                     "--width", "64", "--height", "32", "--shift", "camera_mount"]) == 0
    assert ", shift camera_mount; " in capsys.readouterr().err
    meta = json.loads((out / "scenes.json").read_text())
    assert meta["camera"]["pitch_down_deg"] == 3.0  # the drives' camera config is the nominal one
    assert meta["scenes"][0]["shift"] == "camera_mount"
    assert meta["scenes"][0]["render_mount"] == {"mount_z_m": 1.85, "pitch_down_deg": 7.0, "roll_deg": 3.0}
