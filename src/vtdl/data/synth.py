"""`vtdl synth`: the embedded data set, real video files whose class lives only in the motion.

Every class draws its scenes from the same appearance distribution (a stationary textured
background, three moving two-tone objects, one static distractor, pixel noise), so no single
frame says anything about the class; only how the objects move does. The files are written in
the official UCF101 or HMDB51 layouts, so the downstream stages read them with the code path
that reads the real data sets.

Why the motion is built the way it is (see PILOT.md): a first toy set moved its objects the
same way for a whole video, so two segments of one video differed only in *where* the objects
were, and temporal discrimination learnt the static layout. Here each video is cut into phases
of random length that differ in speed (slow, normal, fast, brief pauses) and, where the class
allows, in motion sub-type (tilt, drift, waveform, ellipse, ...), while the class signature
(direction, rotation sense, periodic vs one-way, order of events, ...) holds in any window of
16 frames. Objects wrap at the borders, so any segment's layout looks like any other's.

Determinism: each video is rendered from its own seed (data set seed, layout, class index, video
index), so a prefix of the classes (`--num-classes`) yields the same files as the full set, and
re-running with the same arguments rewrites identical bytes (DVC caching relies on it).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vtdl import seeds
from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_write_text
from vtdl.progress import progress

FORMATS = ("ucf101", "hmdb51")

# The two class sets share no motion: the ucf101 set is the pretraining pool and first
# downstream task, the hmdb51 set the second downstream task with unseen classes.
UCF_CLASSES = [
    "MoveRight",
    "MoveLeft",
    "MoveUp",
    "MoveDown",
    "RotateClockwise",
    "RotateCounterClockwise",
    "Grow",
    "Shrink",
    "OscillateFast",
    "OscillateSlow",
]
# `pulse` / `pulse_fast` come first so that even a 3-class set has HMDB51's quirk: the sorted
# split-file names (`pulse_fast_test_split1.txt` < `pulse_test_split1.txt`, like
# `sword_exercise` < `sword`) order the classes differently from the sorted class names.
HMDB_CLASSES = [
    "pulse",
    "pulse_fast",
    "move_up_right",
    "move_up_left",
    "move_down_right",
    "move_down_left",
    "orbit_cw",
    "orbit_ccw",
    "bob_fast",
    "bob_slow",
    # Pure temporal-order pairs last: a supervised 3D CNN needs the most data for them.
    "right_then_up",
    "up_then_right",
    "accelerate",
    "decelerate",
]
_CLASSES = {"ucf101": UCF_CLASSES, "hmdb51": HMDB_CLASSES}
_FORMAT_TAG = {"ucf101": 101, "hmdb51": 51}  # part of every seed, so the two sets never share one

# Geometry is defined for 48-pixel-high frames and scales with the height.
_REF_HEIGHT = 48.0
_NUM_MOVERS = 3  # the pilot needed 3 moving objects for enough moving area
_SHAPES = ("circle", "square", "triangle", "ring", "cross", "diamond")
_BASE_RADIUS = (6.0, 9.0)  # pixels at 48 rows
# Size multiplier range (log scale). Every class shows sizes uniformly spread over it, so the
# size of an object in one frame says nothing about grow/shrink/pulse classes.
_LOG_SCALE = (math.log(0.55), math.log(1.6))
_BG_CONTRAST = 0.5  # the pilot's lower-contrast background let the objects stand out
_PIXEL_NOISE = 0.02
_UNIFORM_BYTE_SD = math.sqrt((256**2 - 1) / 12.0)  # standard deviation of a uniform random byte

# Phases: random length, a speed level that changes from phase to phase, brief pauses.
_PHASE_LEN = (8, 20)
_SPEED_LEVELS = (0.5, 1.0, 1.8)
_PAUSE_PROB = 0.3
_PAUSE_LEN = (2, 4)

# Motion magnitudes at speed level 1 (pixels at 48 rows, radians, log-size per frame).
_TRANSLATE_SPEED = 1.2
_SPIN_SPEED = 0.22
_GROW_SPEED = 0.06
_DRIFT_SPEED = 0.3
_OSC_AMPLITUDE = 4.0
# Periods (frames) of the frequency-coded classes. Phase speed changes the amplitude, never the
# frequency, so fast and slow classes never overlap (slow: a turn every <= 14 moving frames).
_PERIOD_FAST = (6.0, 9.0)
_PERIOD_SLOW = (18.0, 26.0)
_PULSE_FAST = (5.0, 8.0)
_PULSE_SLOW = (16.0, 24.0)
_PULSE_AMPLITUDE = 0.25
_ORBIT_RADIUS = (5.0, 8.0)
_ORBIT_PERIOD = (12.0, 18.0)
_LEG_LEN = (4, 5)  # order-of-events classes: frames per leg, then a rest
_REST_LEN = (3, 4)
_LEG_SPEED = 2.0
_RAMP_LEN = (8, 12)  # accelerate / decelerate: frames per speed ramp
_RAMP_SPEED = 2.5


def class_names(fmt: str) -> list[str]:
    """The full class list of a layout, in the fixed order `--num-classes` takes a prefix of."""
    if fmt not in _CLASSES:
        raise VtdlError(f"--format: unknown layout {fmt!r} (choose from {', '.join(FORMATS)})")
    return list(_CLASSES[fmt])


# --------------------------------------------------------------------------------------------
# Motion: per-frame tracks of every moving object.


@dataclass(frozen=True)
class _Tracks:
    """Object states per frame, each array (T, n): centre (pixels, unwrapped), angle, log size."""

    x: np.ndarray
    y: np.ndarray
    angle: np.ndarray
    log_scale: np.ndarray


@dataclass(frozen=True)
class _Context:
    """What a class's motion function needs: timing, phases and the objects' initial states."""

    num_frames: int
    unit: float  # pixels per reference pixel
    level: np.ndarray  # (T,) speed level of the frame's phase, 0 in a pause
    phase: np.ndarray  # (T,) phase index of each frame
    num_phases: int
    gain: np.ndarray  # (n,) per-object speed factor
    x0: np.ndarray  # (n,) initial states
    y0: np.ndarray
    angle0: np.ndarray
    log_scale0: np.ndarray


def _phase_plan(
    rng: np.random.Generator, num_frames: int, pauses: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the video into phases; return each frame's speed level (0 = pause) and phase index.

    Consecutive phases never share a speed level, so any two segments of a video that are a
    phase apart move differently.
    """
    level = np.empty(num_frames)
    phase = np.empty(num_frames, dtype=np.int64)
    t, index, previous = 0, 0, -1
    # Start part-way into a phase so that phase boundaries do not line up with frame 0.
    length = int(rng.integers(_PHASE_LEN[0], _PHASE_LEN[1] + 1))
    length -= int(rng.integers(0, length))
    while t < num_frames:
        choice = int(rng.choice([c for c in range(len(_SPEED_LEVELS)) if c != previous]))
        previous = choice
        end = min(num_frames, t + length)
        level[t:end] = _SPEED_LEVELS[choice] * rng.uniform(0.85, 1.15)
        phase[t:end] = index
        t, index = end, index + 1
        if pauses and t < num_frames and rng.random() < _PAUSE_PROB:
            end = min(num_frames, t + int(rng.integers(_PAUSE_LEN[0], _PAUSE_LEN[1] + 1)))
            level[t:end] = 0.0
            phase[t:end] = index - 1  # a pause keeps the sub-type of the phase it interrupts
            t = end
        length = int(rng.integers(_PHASE_LEN[0], _PHASE_LEN[1] + 1))
    return level, phase


def _cumulative(step: np.ndarray) -> np.ndarray:
    """Offsets from frame 0 given per-frame steps (step[t] moves frame t to frame t + 1)."""
    out = np.zeros_like(step)
    np.cumsum(step[:-1], axis=0, out=out[1:])
    return out


def _static(ctx: _Context) -> _Tracks:
    shape = (ctx.num_frames, ctx.gain.size)
    return _Tracks(
        x=np.broadcast_to(ctx.x0, shape).copy(),
        y=np.broadcast_to(ctx.y0, shape).copy(),
        angle=np.broadcast_to(ctx.angle0, shape).copy(),
        log_scale=np.broadcast_to(ctx.log_scale0, shape).copy(),
    )


def _with(tracks: _Tracks, **changes: np.ndarray) -> _Tracks:
    fields = {"x": tracks.x, "y": tracks.y, "angle": tracks.angle, "log_scale": tracks.log_scale}
    fields.update(changes)
    return _Tracks(**fields)


def _drift(rng: np.random.Generator, ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    """Sub-type for in-place classes: per phase, stay put or drift slowly in a random direction.

    The drift direction is random, so it carries no class information, but it makes the phases
    of one video differ in how the objects travel.
    """
    moving = rng.random(ctx.num_phases) < 0.5
    heading = rng.uniform(0.0, 2.0 * np.pi, ctx.num_phases)
    speed = _DRIFT_SPEED * ctx.unit * moving[ctx.phase] * (ctx.level > 0)
    dx = (speed * np.cos(heading[ctx.phase]))[:, None] * ctx.gain
    dy = (-speed * np.sin(heading[ctx.phase]))[:, None] * ctx.gain
    return _cumulative(dx), _cumulative(dy)


def _wave(phase: np.ndarray, triangle: np.ndarray) -> np.ndarray:
    """Periodic waveform in [-1, 1]: a sine, or a triangle (constant speed, sharp turns)."""
    sine = np.sin(phase)
    return np.where(triangle, (2.0 / np.pi) * np.arcsin(np.clip(sine, -1.0, 1.0)), sine)


def _periodic(
    rng: np.random.Generator, ctx: _Context, period_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-amplitude oscillation per frame and object, with the per-phase amplitude factor.

    Returns (displacement steps of a unit-amplitude wave, (T, n); amplitude factor, (T, 1)).
    The frequency stays in `period_range` in every phase; phases change amplitude and waveform.
    """
    period = rng.uniform(*period_range) * rng.uniform(0.92, 1.08, ctx.num_phases)[ctx.phase]
    running = ctx.level > 0
    omega = 2.0 * np.pi / period * running
    start = rng.uniform(0.0, 2.0 * np.pi) + rng.uniform(-0.4, 0.4, ctx.gain.size)
    angle = start + _cumulative(omega)[:, None]
    angle_next = angle + omega[:, None]
    triangle = (rng.random(ctx.num_phases) < 0.5)[ctx.phase][:, None]
    step = _wave(angle_next, triangle) - _wave(angle, triangle)
    amplitude = (0.3 + 0.7 * ctx.level)[:, None] * running[:, None]
    return step, amplitude


def _translate(direction_deg: float, tilt_deg: float) -> Callable[..., _Tracks]:
    """One-way motion in a direction (0 = right, 90 = up); each phase tilts it a little."""

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        tilt = rng.uniform(-tilt_deg, tilt_deg, ctx.num_phases)[ctx.phase]
        heading = np.deg2rad(direction_deg + tilt)
        speed = _TRANSLATE_SPEED * ctx.unit * ctx.level
        dx = (speed * np.cos(heading))[:, None] * ctx.gain
        dy = (-speed * np.sin(heading))[:, None] * ctx.gain  # image rows grow downwards
        base = _static(ctx)
        return _with(base, x=base.x + _cumulative(dx), y=base.y + _cumulative(dy))

    return motion


def _spin(sense: float) -> Callable[..., _Tracks]:
    """Each object turns about its own centre (+1: clockwise on screen)."""

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        turn = (_SPIN_SPEED * ctx.level)[:, None] * ctx.gain * sense
        dx, dy = _drift(rng, ctx)
        base = _static(ctx)
        return _with(base, x=base.x + dx, y=base.y + dy, angle=base.angle + _cumulative(turn))

    return motion


def _grow(sense: float) -> Callable[..., _Tracks]:
    """Objects grow (+1) or shrink (-1) steadily and re-appear at the other end of the range.

    Initial sizes are spread over the whole range, so the sizes in any frame look like those of
    every other class.
    """

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        step = (_GROW_SPEED * ctx.level)[:, None] * ctx.gain * sense
        low, high = _LOG_SCALE
        log_scale = low + np.mod(ctx.log_scale0 + _cumulative(step) - low, high - low)
        dx, dy = _drift(rng, ctx)
        base = _static(ctx)
        return _with(base, x=base.x + dx, y=base.y + dy, log_scale=log_scale)

    return motion


def _oscillate(axis: str, period_range: tuple[float, float]) -> Callable[..., _Tracks]:
    """Back-and-forth motion along one axis at a class-specific frequency."""

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        step, amplitude = _periodic(rng, ctx, period_range)
        offset = _cumulative(step * amplitude * _OSC_AMPLITUDE * ctx.unit)
        dx, dy = _drift(rng, ctx)
        base = _static(ctx)
        if axis == "x":
            return _with(base, x=base.x + offset + dx, y=base.y + dy)
        return _with(base, x=base.x + dx, y=base.y + offset + dy)

    return motion


def _fold(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect values into [low, high]; keeps a uniform distribution uniform."""
    span = high - low
    folded = np.mod(value - low, 2.0 * span)
    return low + np.where(folded > span, 2.0 * span - folded, folded)


def _pulse(period_range: tuple[float, float]) -> Callable[..., _Tracks]:
    """Objects swell and shrink periodically at a class-specific frequency."""

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        step, amplitude = _periodic(rng, ctx, period_range)
        offset = _cumulative(step * amplitude * _PULSE_AMPLITUDE)
        log_scale = _fold(ctx.log_scale0 + offset, *_LOG_SCALE)
        dx, dy = _drift(rng, ctx)
        base = _static(ctx)
        return _with(base, x=base.x + dx, y=base.y + dy, log_scale=log_scale)

    return motion


def _orbit(sense: float) -> Callable[..., _Tracks]:
    """Objects travel round small circles or ellipses (+1: counter-clockwise on screen)."""

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        radius = rng.uniform(*_ORBIT_RADIUS, ctx.gain.size) * ctx.unit
        flat = np.where(rng.random(ctx.num_phases) < 0.5, 1.0, rng.uniform(0.5, 0.8))
        flat = flat[ctx.phase][:, None]
        omega = 2.0 * np.pi / rng.uniform(*_ORBIT_PERIOD) * ctx.level * sense
        start = rng.uniform(0.0, 2.0 * np.pi) + rng.uniform(-0.6, 0.6, ctx.gain.size)
        angle = start + _cumulative(omega)[:, None]
        angle_next = angle + omega[:, None]
        dx = radius * (np.cos(angle_next) - np.cos(angle))
        dy = -radius * flat * (np.sin(angle_next) - np.sin(angle))
        base = _static(ctx)
        return _with(base, x=base.x + _cumulative(dx), y=base.y + _cumulative(dy))

    return motion


def _two_legs(first_deg: float, second_deg: float) -> Callable[..., _Tracks]:
    """Repeated cycles: a leg in one direction, straight into a leg in another, then a rest.

    `right_then_up` and `up_then_right` travel the same net way; only the order of the two
    events within a cycle (which leg follows the rest) tells them apart. A cycle lasts at most
    14 frames, so any 16-frame window holds the direct first-to-second transition.
    """

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        heading = np.empty(ctx.num_frames)
        moving = np.empty(ctx.num_frames)
        t = -int(rng.integers(0, _LEG_LEN[1] * 2 + _REST_LEN[1]))  # random start in a cycle
        while t < ctx.num_frames:
            legs = (
                (first_deg, 1.0, rng.integers(_LEG_LEN[0], _LEG_LEN[1] + 1)),
                (second_deg, 1.0, rng.integers(_LEG_LEN[0], _LEG_LEN[1] + 1)),
                (0.0, 0.0, rng.integers(_REST_LEN[0], _REST_LEN[1] + 1)),
            )
            for direction, move, length in legs:
                lo, hi = max(t, 0), max(min(t + int(length), ctx.num_frames), 0)
                heading[lo:hi] = np.deg2rad(direction)
                moving[lo:hi] = move
                t += int(length)
        speed = _LEG_SPEED * ctx.unit * ctx.level * moving
        dx = (speed * np.cos(heading))[:, None] * ctx.gain
        dy = (-speed * np.sin(heading))[:, None] * ctx.gain
        base = _static(ctx)
        return _with(base, x=base.x + _cumulative(dx), y=base.y + _cumulative(dy))

    return motion


def _ramp(rising: bool) -> Callable[..., _Tracks]:
    """Repeated speed ramps: from slow to fast (accelerate) or fast to slow (decelerate).

    The motion is horizontal; each phase picks left or right and a small tilt at random, so
    the speed profile, not the heading, is the class.
    """

    def motion(rng: np.random.Generator, ctx: _Context) -> _Tracks:
        profile = np.empty(ctx.num_frames)
        t = -int(rng.integers(0, _RAMP_LEN[1]))
        while t < ctx.num_frames:
            length = int(rng.integers(_RAMP_LEN[0], _RAMP_LEN[1] + 1))
            ramp = 0.1 + 0.9 * np.linspace(0.0, 1.0, length)
            ramp = ramp if rising else ramp[::-1]
            lo, hi = max(t, 0), min(t + length, ctx.num_frames)
            if hi > lo:
                profile[lo:hi] = ramp[lo - t : hi - t]
            t += length
        heading = rng.integers(0, 2, ctx.num_phases) * np.pi + rng.uniform(
            -0.25, 0.25, ctx.num_phases
        )
        heading = heading[ctx.phase]
        speed = _RAMP_SPEED * ctx.unit * ctx.level * profile
        dx = (speed * np.cos(heading))[:, None] * ctx.gain
        dy = (-speed * np.sin(heading))[:, None] * ctx.gain
        base = _static(ctx)
        return _with(base, x=base.x + _cumulative(dx), y=base.y + _cumulative(dy))

    return motion


# Class -> (motion function, whether generic pauses may interrupt it). The order-of-events
# classes have their own rests; a generic pause between their two legs would blur the order.
_MOTIONS: dict[str, tuple[Callable[..., _Tracks], bool]] = {
    "MoveRight": (_translate(0.0, 20.0), True),
    "MoveLeft": (_translate(180.0, 20.0), True),
    "MoveUp": (_translate(90.0, 20.0), True),
    "MoveDown": (_translate(270.0, 20.0), True),
    "RotateClockwise": (_spin(+1.0), True),
    "RotateCounterClockwise": (_spin(-1.0), True),
    "Grow": (_grow(+1.0), True),
    "Shrink": (_grow(-1.0), True),
    "OscillateFast": (_oscillate("x", _PERIOD_FAST), True),
    "OscillateSlow": (_oscillate("x", _PERIOD_SLOW), True),
    "pulse": (_pulse(_PULSE_SLOW), True),
    "pulse_fast": (_pulse(_PULSE_FAST), True),
    "move_up_right": (_translate(45.0, 10.0), True),
    "move_up_left": (_translate(135.0, 10.0), True),
    "move_down_left": (_translate(225.0, 10.0), True),
    "move_down_right": (_translate(315.0, 10.0), True),
    "orbit_cw": (_orbit(-1.0), True),
    "orbit_ccw": (_orbit(+1.0), True),
    "right_then_up": (_two_legs(0.0, 90.0), False),
    "up_then_right": (_two_legs(90.0, 0.0), False),
    "bob_fast": (_oscillate("y", _PERIOD_FAST), True),
    "bob_slow": (_oscillate("y", _PERIOD_SLOW), True),
    "accelerate": (_ramp(True), True),
    "decelerate": (_ramp(False), True),
}
assert set(_MOTIONS) == set(UCF_CLASSES) | set(HMDB_CLASSES)
assert not set(UCF_CLASSES) & set(HMDB_CLASSES)


# --------------------------------------------------------------------------------------------
# Appearance: identical distribution for every class.


@dataclass(frozen=True)
class _Look:
    """How one object looks: shape, two colour tones and base radius in pixels."""

    shape: str
    colour: np.ndarray  # (3,) tone of the half with positive object-frame u
    colour2: np.ndarray  # (3,) tone of the other half: shows turning and interior motion
    radius: float


def _sample_look(rng: np.random.Generator, unit: float) -> _Look:
    colour = rng.uniform(0.0, 1.0, 3)
    # The second tone is a clearly darker or lighter version of the first.
    if colour.mean() > 0.5:
        colour2 = colour * rng.uniform(0.3, 0.55)
    else:
        colour2 = colour + (1.0 - colour) * rng.uniform(0.45, 0.7)
    return _Look(
        shape=_SHAPES[int(rng.integers(len(_SHAPES)))],
        colour=colour,
        colour2=colour2,
        radius=float(rng.uniform(*_BASE_RADIUS)) * unit,
    )


def _interpolation_matrix(size: int, knots: int) -> np.ndarray:
    """(size, knots) matrix that linearly interpolates `knots` values onto `size` pixels."""
    position = np.linspace(0.0, knots - 1.0, size)
    left = np.minimum(np.floor(position).astype(np.int64), knots - 2)
    frac = position - left
    matrix = np.zeros((size, knots))
    matrix[np.arange(size), left] = 1.0 - frac
    matrix[np.arange(size), left + 1] = frac
    return matrix


def _background(rng: np.random.Generator, height: int, width: int, unit: float) -> np.ndarray:
    """Stationary texture: smooth colour noise plus a faint grating, contrast `_BG_CONTRAST`."""
    knots_y, knots_x = 4, 5
    rows = _interpolation_matrix(height, knots_y)
    cols = _interpolation_matrix(width, knots_x)
    coarse = rng.uniform(-1.0, 1.0, (3, knots_y, knots_x))
    noise = np.einsum("hk,ckl,wl->hwc", rows, coarse, cols)
    theta = rng.uniform(0.0, np.pi)
    period = rng.uniform(6.0, 14.0) * unit
    yy, xx = np.mgrid[0:height, 0:width]
    grating = np.sin(
        2.0 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period + rng.uniform(0, 6.3)
    )
    texture = 0.75 * noise + 0.25 * grating[:, :, None]
    return 0.5 + 0.5 * _BG_CONTRAST * texture


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape's outline in object units (< 0 inside)."""
    if shape == "circle":
        return np.hypot(u, v) - 1.0
    if shape == "ring":
        return np.abs(np.hypot(u, v) - 0.72) - 0.28
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.82
    if shape == "diamond":
        return (np.abs(u) + np.abs(v) - 1.15) / math.sqrt(2.0)
    if shape == "triangle":
        # Equilateral, circumradius 1.2: the largest of the three edge distances.
        edges = [(math.cos(a), math.sin(a)) for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
        return np.maximum.reduce([cx * u + cy * v for cx, cy in edges]) - 0.6
    if shape == "cross":
        bar_h = np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.35)
        bar_v = np.maximum(np.abs(v) - 1.0, np.abs(u) - 0.35)
        return np.minimum(bar_h, bar_v)
    raise AssertionError(f"unknown shape {shape}")


def _paint(
    canvas: np.ndarray,
    look: _Look,
    x: np.ndarray,
    y: np.ndarray,
    angle: np.ndarray,
    log_scale: np.ndarray,
) -> None:
    """Alpha-blend one object into every frame of `canvas` (T, H, W, 3, float32), wrapping.

    x, y, angle, log_scale are per-frame arrays (T,). Edges are anti-aliased so that sub-pixel
    motion is visible in the pixels.
    """
    frames, height, width, _ = canvas.shape
    radius = (look.radius * np.exp(log_scale)).astype(np.float32)[:, None, None]
    # Work in a window around the object only (shapes reach at most 1.2 radii from the centre).
    reach = int(math.ceil(1.25 * float(radius.max()))) + 1
    size_y, size_x = min(2 * reach + 1, height), min(2 * reach + 1, width)
    centre_x, centre_y = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    offset_x = np.arange(size_x) - size_x // 2
    offset_y = np.arange(size_y) - size_y // 2
    # Pixel indices wrap around the borders (objects leaving one side enter at the other);
    # the distances stay those of the unwrapped plane.
    cols = np.mod(centre_x[:, None] + offset_x, width)
    rows = np.mod(centre_y[:, None] + offset_y, height)
    dx = (centre_x[:, None] + offset_x - x[:, None]).astype(np.float32)[:, None, :]
    dy = (centre_y[:, None] + offset_y - y[:, None]).astype(np.float32)[:, :, None]
    cos = np.cos(angle).astype(np.float32)[:, None, None]
    sin = np.sin(angle).astype(np.float32)[:, None, None]
    # Screen offset = R(angle) @ (u, v) * radius; with rows growing downwards a growing angle
    # turns the object clockwise on screen.
    u = (dx * cos + dy * sin) / radius
    v = (-dx * sin + dy * cos) / radius
    alpha = np.clip(0.5 - _signed_distance(look.shape, u, v) * radius, 0.0, 1.0)[..., None]
    tone = np.clip(0.5 + u * radius, 0.0, 1.0)[..., None]
    colour = look.colour2.astype(np.float32) + tone * (look.colour - look.colour2).astype(
        np.float32
    )
    # Gather the windows through flat pixel indices (np.take is the fastest gather), blend,
    # and write them back; indices within one frame's window never repeat.
    pixels = canvas.reshape(-1, 3)
    assert np.shares_memory(pixels, canvas), "canvas must be C-contiguous"
    flat = ((np.arange(frames)[:, None, None] * height + rows[:, :, None]) * width).ravel()
    flat = flat.reshape(frames, size_y, 1) + cols[:, None, :]
    flat = flat.ravel()
    patch = np.take(pixels, flat, axis=0).reshape(colour.shape)
    patch += alpha * (colour - patch)
    pixels[flat] = patch.reshape(-1, 3)


def render_video(
    class_name: str, rng: np.random.Generator, num_frames: int, height: int, width: int
) -> np.ndarray:
    """Render one video of a class as RGB uint8 frames (T, H, W, 3); pure, no I/O.

    All randomness comes from `rng`, so the same generator state gives the same frames.
    """
    if class_name not in _MOTIONS:
        raise VtdlError(f"unknown synthetic class {class_name!r}")
    if num_frames < 1 or height < 8 or width < 8:
        raise VtdlError(f"video size {num_frames}x{height}x{width} too small (frames x H x W)")
    motion, pauses = _MOTIONS[class_name]
    unit = height / _REF_HEIGHT
    # The scene (everything frame 0 shows) is drawn first and the same way for every class, so
    # a given generator state gives the same first frame whatever the class.
    background = _background(rng, height, width, unit)
    distractor = _sample_look(rng, unit)
    distractor_pose = rng.uniform(
        (0.0, 0.0, 0.0, _LOG_SCALE[0]), (width, height, 2 * np.pi, _LOG_SCALE[1])
    )
    movers = [_sample_look(rng, unit) for _ in range(_NUM_MOVERS)]
    start = {
        "gain": rng.uniform(0.8, 1.2, _NUM_MOVERS),
        "x0": rng.uniform(0.0, width, _NUM_MOVERS),
        "y0": rng.uniform(0.0, height, _NUM_MOVERS),
        "angle0": rng.uniform(0.0, 2.0 * np.pi, _NUM_MOVERS),
        "log_scale0": rng.uniform(*_LOG_SCALE, _NUM_MOVERS),
    }
    motion_rng, noise_rng = rng.spawn(2)
    level, phase = _phase_plan(motion_rng, num_frames, pauses)
    ctx = _Context(
        num_frames=num_frames,
        unit=unit,
        level=level,
        phase=phase,
        num_phases=int(phase.max()) + 1,
        **start,
    )
    tracks = motion(motion_rng, ctx)

    canvas = np.empty((num_frames, height, width, 3), dtype=np.float32)  # C-contiguous
    canvas[:] = background
    still = np.ones(num_frames)
    _paint(canvas, distractor, *(still * value for value in distractor_pose))
    for index, look in enumerate(movers):
        _paint(
            canvas,
            look,
            tracks.x[:, index],
            tracks.y[:, index],
            tracks.angle[:, index],
            tracks.log_scale[:, index],
        )
    # Pixel noise, fresh in every frame: uniform, from random bytes (several times faster
    # to draw than normals), scaled to the standard deviation `_PIXEL_NOISE`.
    noise = noise_rng.integers(0, 256, canvas.shape, dtype=np.uint8).astype(np.float32)
    noise -= 127.5
    canvas *= 255.0
    canvas += noise * np.float32(255.0 * _PIXEL_NOISE / _UNIFORM_BYTE_SD)
    canvas += 0.5
    np.clip(canvas, 0.0, 255.0, out=canvas)
    return canvas.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Layouts and split files.


@dataclass(frozen=True)
class _Video:
    """One file to write: its path relative to the videos root and how to render it."""

    rel_path: str
    class_name: str
    class_index: int  # position in the full class list (seeds stay put under --num-classes)
    video_index: int  # position within its class


def ucf_test_groups(groups: int, split: int) -> range:
    """1-based groups tested in `split` (1..3): UCF101's blocks of 7 of 25, scaled to `groups`."""
    block = min(max(1, int(7 * groups / 25 + 0.5)), groups // 3)
    return range((split - 1) * block + 1, split * block + 1)


def _ucf_name(class_name: str, group: int, clip: int) -> str:
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.avi"


def _plan_ucf(classes: list[str], groups: int, clips: int) -> list[_Video]:
    return [
        _Video(_ucf_name(name, g, c), name, index, (g - 1) * clips + (c - 1))
        for index, name in enumerate(classes)
        for g in range(1, groups + 1)
        for c in range(1, clips + 1)
    ]


def _ucf_split_texts(classes: list[str], groups: int, clips: int) -> dict[str, str]:
    """classInd.txt, trainlist0k.txt (with 1-based ids), testlist0k.txt (no ids); CRLF lines."""

    def text(lines: list[str]) -> str:
        return "".join(line + "\r\n" for line in lines)

    texts = {"classInd.txt": text([f"{i} {name}" for i, name in enumerate(classes, start=1)])}
    for split in (1, 2, 3):
        tested = set(ucf_test_groups(groups, split))
        train, test = [], []
        for label, name in enumerate(classes, start=1):
            for g in range(1, groups + 1):
                for c in range(1, clips + 1):
                    if g in tested:
                        test.append(_ucf_name(name, g, c))
                    else:
                        train.append(f"{_ucf_name(name, g, c)} {label}")
        texts[f"trainlist0{split}.txt"] = text(train)
        texts[f"testlist0{split}.txt"] = text(test)
    return texts


# HMDB51 file names carry meta tags: visible body part, camera motion, number of people,
# viewpoint, quality. Here they are drawn at random and say nothing about the class.
_HMDB_TAGS = (
    ("f", "h", "u", "l"),
    ("cm", "nm"),
    ("np1", "np2", "np3"),
    ("fr", "ba", "le", "ri"),
    ("bad", "med", "goo"),
)


def _plan_hmdb(classes: list[str], per_class: int, seed: int) -> list[_Video]:
    """HMDB-like names `synth<source>_<class>_<tags>_<k>.avi`; a source has 1-3 clips."""
    videos = []
    for index, name in enumerate(classes):
        rng = seeds.numpy_rng(seed, _FORMAT_TAG["hmdb51"], 1, index)
        video_index, source = 0, index * per_class  # sources of a class never collide
        while video_index < per_class:
            tags = "_".join(str(options[int(rng.integers(len(options)))]) for options in _HMDB_TAGS)
            for k in range(min(int(rng.integers(1, 4)), per_class - video_index)):
                rel = f"{name}/synth{source:04d}_{name}_{tags}_{k}.avi"
                videos.append(_Video(rel, name, index, video_index))
                video_index += 1
            source += 1
    return videos


def hmdb_split_counts(per_class: int) -> tuple[int, int, int]:
    """(train, test, unused) videos per class and split: 10% unused, the rest 70:30."""
    unused = int(0.1 * per_class)
    used = per_class - unused
    test = max(1, int(0.3 * used + 0.5))
    return used - test, test, unused


def _hmdb_split_texts(
    classes: list[str], videos: list[_Video], per_class: int, seed: int
) -> dict[str, str]:
    """<class>_test_split{1,2,3}.txt: `<name>.avi <code> ` (1 train, 2 test, 0 unused)."""
    train, test, _ = hmdb_split_counts(per_class)
    texts = {}
    for index, name in enumerate(classes):
        names = sorted(Path(v.rel_path).name for v in videos if v.class_name == name)
        for split in (1, 2, 3):
            rng = seeds.numpy_rng(seed, _FORMAT_TAG["hmdb51"], 2, split, index)
            codes = np.zeros(len(names), dtype=np.int64)
            order = rng.permutation(len(names))
            codes[order[:train]] = 1
            codes[order[train : train + test]] = 2
            lines = (f"{n} {code} \n" for n, code in zip(names, codes, strict=True))
            texts[f"{name}_test_split{split}.txt"] = "".join(lines)
    return texts


def _refuse_foreign_files(
    videos_dir: Path, splits_dir: Path, videos: list[_Video], split_files: list[str]
) -> None:
    """Stop before writing if the output folders hold files this run would not write.

    Such leftovers (say, from a run with more classes) would be read as part of the data set
    downstream. Hidden names (interrupted atomic writes) are ignored.
    """
    expected = {videos_dir / v.rel_path for v in videos}
    expected |= {videos_dir / Path(v.rel_path).parent for v in videos}
    expected |= {splits_dir / name for name in split_files}
    for root in (videos_dir, splits_dir):
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            if not hidden and path not in expected and path not in (videos_dir, splits_dir):
                raise VtdlError(
                    f"{path}: not part of the data set to generate; "
                    f"use an empty output folder (or remove {root})"
                )


def _check_settings(
    fmt: str,
    num_classes: int | None,
    groups: int,
    clips_per_group: int,
    videos_per_class: int,
    frames_min: int,
    frames_max: int,
    height: int,
    width: int,
    fps: float,
) -> list[str]:
    """Validate the arguments; return the classes to generate."""
    classes = class_names(fmt)
    if num_classes is not None:
        if not 2 <= num_classes <= len(classes):
            raise VtdlError(
                f"--num-classes: {num_classes} out of range (2..{len(classes)} for {fmt})"
            )
        classes = classes[:num_classes]
    if fmt == "ucf101":
        if groups < 3:
            raise VtdlError(f"--groups: {groups} < 3 (each split tests its own block of groups)")
        if clips_per_group < 1:
            raise VtdlError(f"--clips-per-group: {clips_per_group} < 1")
    elif videos_per_class < 4:
        raise VtdlError(f"--videos-per-class: {videos_per_class} < 4 (need train and test videos)")
    if frames_min < 8:
        raise VtdlError(f"--frames-min: {frames_min} < 8")
    if frames_max < frames_min:
        raise VtdlError(f"--frames-max: {frames_max} < --frames-min {frames_min}")
    for flag, value in (("--height", height), ("--width", width)):
        # yuv420p, the pixel format of the encoded files, needs even sizes.
        if value < 16 or value % 2:
            raise VtdlError(f"{flag}: {value} must be an even number >= 16")
    if not fps > 0:
        raise VtdlError(f"--fps: {fps} must be > 0")
    return classes


def generate(
    fmt: str,
    videos_dir: str | Path,
    splits_dir: str | Path,
    *,
    num_classes: int | None = None,
    groups: int = 25,
    clips_per_group: int = 4,
    videos_per_class: int = 50,
    frames_min: int = 40,
    frames_max: int = 56,
    height: int = 48,
    width: int = 64,
    fps: float = 25.0,
    seed: int = 0,
) -> None:
    """Write a synthetic data set in the official `fmt` layout: video files and split files.

    ucf101: `<videos>/<Class>/v_<Class>_gGG_cCC.avi` for `groups` x `clips_per_group` clips per
    class, and classInd / trainlist0k / testlist0k in `splits_dir`. hmdb51: `videos_per_class`
    files `<videos>/<class>/<name>.avi` and `<class>_test_split{1,2,3}.txt`. Each video has a
    frame count drawn uniformly from [frames_min, frames_max].
    """
    classes = _check_settings(
        fmt,
        num_classes,
        groups,
        clips_per_group,
        videos_per_class,
        frames_min,
        frames_max,
        height,
        width,
        fps,
    )
    videos_dir, splits_dir = Path(videos_dir), Path(splits_dir)
    if fmt == "ucf101":
        videos = _plan_ucf(classes, groups, clips_per_group)
        split_texts = _ucf_split_texts(classes, groups, clips_per_group)
    else:
        videos = _plan_hmdb(classes, videos_per_class, seed)
        split_texts = _hmdb_split_texts(classes, videos, videos_per_class, seed)
    _refuse_foreign_files(videos_dir, splits_dir, videos, list(split_texts))
    # Imported here: building the job graph reads this module's class and split sizes
    # (vtdl.data.sizes), and PyAV's import is a tenth of a second of every `make reproduce`.
    from vtdl.data.video import write_video

    for video in progress(videos, desc=f"synth {fmt}", total=len(videos), unit="video"):
        rng = seeds.numpy_rng(seed, _FORMAT_TAG[fmt], 0, video.class_index, video.video_index)
        num_frames = int(rng.integers(frames_min, frames_max + 1))
        frames = render_video(video.class_name, rng, num_frames, height, width)
        write_video(videos_dir / video.rel_path, frames, fps=fps)
    for name, text in split_texts.items():
        atomic_write_text(splits_dir / name, text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `vtdl synth`."""
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout to write")
    parser.add_argument("--videos", required=True, type=Path, help="videos root to write")
    parser.add_argument("--splits", required=True, type=Path, help="split-file folder to write")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="use the first N classes of the layout's list (default: all)",
    )
    parser.add_argument("--groups", type=int, default=25, help="ucf101: groups per class")
    parser.add_argument(
        "--clips-per-group", type=int, default=4, help="ucf101: clips per group and class"
    )
    parser.add_argument("--videos-per-class", type=int, default=50, help="hmdb51: videos per class")
    parser.add_argument("--frames-min", type=int, default=40, help="shortest video (frames)")
    parser.add_argument("--frames-max", type=int, default=56, help="longest video (frames)")
    parser.add_argument("--height", type=int, default=48, help="frame height (even)")
    parser.add_argument("--width", type=int, default=64, help="frame width (even)")
    parser.add_argument("--fps", type=float, default=25.0, help="frame rate of the files")
    parser.add_argument("--seed", type=int, default=0, help="data set seed")


def run(args: argparse.Namespace) -> None:
    """Generate the data set described by the parsed flags."""
    start = time.monotonic()
    generate(
        args.format,
        args.videos,
        args.splits,
        num_classes=args.num_classes,
        groups=args.groups,
        clips_per_group=args.clips_per_group,
        videos_per_class=args.videos_per_class,
        frames_min=args.frames_min,
        frames_max=args.frames_max,
        height=args.height,
        width=args.width,
        fps=args.fps,
        seed=args.seed,
    )
    print(f"synth {args.format}: done in {time.monotonic() - start:.1f} s", file=sys.stderr)
