"""Per-drive appearance: colours, time of day, haze / fog and shading, drawn from the drive's seed."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

TIMES_OF_DAY = ("day", "dusk", "night")

# common car colours (RGB), sampled with jitter
_CAR_PALETTE = np.array([
    (235, 235, 235), (200, 200, 205), (120, 124, 130), (40, 40, 45), (25, 30, 60), (150, 20, 25), (30, 70, 140),
    (20, 90, 60), (200, 160, 40), (210, 90, 20), (90, 60, 40), (170, 190, 210),
], float)


@dataclass(frozen=True)
class Appearance:
    """Colours are RGB floats in [0, 255] before lighting; ``light`` scales every lit surface."""

    time_of_day: str = "day"
    sky_top: tuple[float, float, float] = (70.0, 120.0, 200.0)
    sky_horizon: tuple[float, float, float] = (185.0, 205.0, 225.0)
    hills: tuple[float, float, float] = (95.0, 120.0, 110.0)
    hill_height_rad: float = 0.035  # silhouette height of the far hills (angle above the horizon)
    hill_phase: tuple[float, ...] = (0.0, 1.0, 2.0)
    grass: tuple[float, float, float] = (80.0, 120.0, 55.0)
    grass_patch: tuple[float, float, float] = (100.0, 130.0, 65.0)
    asphalt: tuple[float, float, float] = (95.0, 95.0, 100.0)
    shoulder: tuple[float, float, float] = (125.0, 120.0, 110.0)
    marking: tuple[float, float, float] = (235.0, 235.0, 230.0)
    divider: tuple[float, float, float] = (235.0, 200.0, 60.0)  # centre line colour (yellow or white)
    fog: tuple[float, float, float] = (185.0, 205.0, 225.0)  # colour distant things fade to
    fog_dist_m: float = 600.0  # 63 % faded at this distance
    light: float = 1.0  # ambient light level of lit surfaces
    lamps_on: bool = False  # head and tail lamps lit (dusk, night)
    sun_dir: tuple[float, float, float] = field(default=(0.4, 0.3, 0.87))  # towards the sun, world frame

    def fade(self, depth_m: np.ndarray | float) -> np.ndarray:
        """Fraction of the fog colour mixed into a surface at a distance (0 near, towards 1 far)."""
        return 1.0 - np.exp(-np.asarray(depth_m, float) / self.fog_dist_m)


def _jitter(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float) -> tuple[float, float, float]:
    v = np.clip(np.asarray(rgb, float) + rng.normal(0.0, amount, 3), 0, 255)
    return (float(v[0]), float(v[1]), float(v[2]))


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random but plausible look: mostly day, some dusk and night, occasional fog."""
    tod = str(rng.choice(TIMES_OF_DAY, p=[0.65, 0.2, 0.15]))
    foggy = rng.random() < 0.15
    # grass: green to dry yellow-brown
    h = rng.uniform(0.17, 0.30)
    s = rng.uniform(0.35, 0.6)
    v = rng.uniform(0.38, 0.55)
    grass = tuple(float(c) * 255 for c in colorsys.hsv_to_rgb(h, s, v))
    grass_patch = tuple(float(c) * 255 for c in colorsys.hsv_to_rgb(h + rng.uniform(-0.04, 0.04), s * 0.8, v * 1.15))
    grey = rng.uniform(70, 115)
    asphalt = _jitter(rng, (grey, grey, grey * 1.04), 3.0)
    shoulder = _jitter(rng, (grey * 1.3, grey * 1.25, grey * 1.15), 5.0)
    divider = (235.0, 195.0, 55.0) if rng.random() < 0.6 else (235.0, 235.0, 230.0)
    sky_top = _jitter(rng, (60.0, 115.0, 200.0), 12.0)
    sky_horizon = _jitter(rng, (180.0, 202.0, 225.0), 8.0)
    hills = _jitter(rng, (90.0, 115.0, 110.0), 10.0)
    fog_dist = float(rng.uniform(450.0, 900.0))
    light, lamps = 1.0, False
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.6, 1.5)])
    if tod == "dusk":
        sky_top = _jitter(rng, (70.0, 80.0, 140.0), 10.0)
        sky_horizon = _jitter(rng, (235.0, 150.0, 90.0), 10.0)
        hills = _jitter(rng, (70.0, 60.0, 75.0), 6.0)
        light, lamps = float(rng.uniform(0.55, 0.75)), True
        fog_dist = float(rng.uniform(250.0, 500.0))
        sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), 0.25])
    elif tod == "night":
        sky_top = _jitter(rng, (8.0, 10.0, 25.0), 3.0)
        sky_horizon = _jitter(rng, (25.0, 28.0, 45.0), 4.0)
        hills = _jitter(rng, (12.0, 14.0, 20.0), 2.0)
        light, lamps = float(rng.uniform(0.6, 0.8)), True
        fog_dist = float(rng.uniform(45.0, 70.0))  # the reach of the headlights
        sun = np.array([0.0, 0.0, 1.0])
    fog = sky_horizon
    if tod == "night":
        fog = (6.0, 7.0, 12.0)
    if foggy and tod != "night":
        fog = _jitter(rng, (190.0, 192.0, 195.0) if tod == "day" else (150.0, 130.0, 120.0), 4.0)
        fog_dist = float(rng.uniform(70.0, 150.0))
        sky_top = tuple(0.3 * a + 0.7 * b for a, b in zip(sky_top, fog))
        sky_horizon = fog
    sun = sun / np.linalg.norm(sun)
    return Appearance(
        time_of_day=tod, sky_top=sky_top, sky_horizon=sky_horizon, hills=hills,
        hill_height_rad=float(rng.uniform(0.015, 0.06)), hill_phase=tuple(float(p) for p in rng.uniform(0, 6.3, 3)),
        grass=grass, grass_patch=grass_patch, asphalt=asphalt, shoulder=shoulder, divider=divider, fog=fog,
        fog_dist_m=fog_dist, light=light, lamps_on=lamps, sun_dir=(float(sun[0]), float(sun[1]), float(sun[2])),
    )


def sample_car_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """A car body colour from a palette of common paints, with some jitter."""
    base = _CAR_PALETTE[rng.integers(len(_CAR_PALETTE))]
    return _jitter(rng, (float(base[0]), float(base[1]), float(base[2])), 10.0)
