"""Clip augmentations: clip-consistent spatial augmentation and Temporal Consistent Augmentation.

Spatial (docs/method.md §2). One set of parameters is drawn per clip and applied to every frame, so
the augmentation changes how the clip looks but never how it moves: rotation in
[-rotation, +rotation] degrees, resize of the short side to `resize_short`, a random
`crop_size` square crop, colour jitter (brightness, contrast, saturation, hue with torchvision's
ColorJitter ranges, the four operations in a random order), scaling to [0, 1] and ImageNet
mean/std normalisation. No flip (a flip would turn "move right" into "move left").

The original applies its jitter with a defect: every operation is applied to the *un-jittered*
image and the result overwritten, so only the last operation of the shuffled list (a uniformly
random one of the four) takes effect. `faithful_jitter=True` reproduces exactly that; the
default chains the four operations, each on the previous result.

The whole clip is processed at once with T as the batch dimension. Implementation choices that
keep it fast and still equal to the textbook pipeline (tests check both against torchvision):
- the resize is done first (on uint8, antialiased) and rotation + crop are fused into a single
  bilinear `grid_sample` that only computes the crop's pixels. Rotation about the image centre
  commutes with the isotropic resize, so the order differs from the original's (docs/method.md
  §2) only by interpolation rounding. Corners uncovered by the rotation are black (0 before
  normalisation), as in the original; the original's PIL rotate uses nearest-neighbour
  resampling, we use bilinear.
- the hue shift is a vectorised HSV hue rotation equal to torchvision's `adjust_hue` to ~1e-6
  but about three times as fast; resize, brightness, contrast, saturation, centre crop and
  normalisation restate torchvision's formulas in plain torch (the tests compare them with
  torchvision), so a job does not pay torchvision's import (about 1.5 s of CPU). A jitter
  operation whose drawn factor changes nothing (strength 0) is skipped. The jitter
  works on float images in [0, 1] (clamped after every step like torchvision), without the
  intermediate uint8 rounding of the original's PIL path.

TCA (docs/method.md §3): `temporal_consistent_augmentation` blends one static frame of the clip into
every frame, which scales every temporal difference by (1 - lambda) and leaves motion intact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from vtdl.errors import VtdlError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (3, 1, 1) tensors for the per-clip normalisation, made once (not once per clip).
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
_MEAN_CT, _STD_CT = _MEAN.view(3, 1, 1, 1), _STD.view(3, 1, 1, 1)  # for (C, T, H, W) clips

# Order of the colour-jitter operations in `ClipAugmentParams.order`.
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")


@dataclass(frozen=True)
class ClipAugmentParams:
    """The randomly drawn parameters of one clip's spatial augmentation.

    `top`/`left` locate the crop in the resized (not yet rotated) frame; `order` is a
    permutation of range(4) indexing `JITTER_OPS`; factors follow torchvision's conventions
    (1.0 / 0.0 for hue = unchanged).
    """

    angle: float
    top: int
    left: int
    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    hue: float


def _check_nonnegative(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise VtdlError(f"{owner}: {name} must be a finite number >= 0, got {value!r}")


def _check_sizes(owner: str, crop_size: int, resize_short: int) -> None:
    for name, value in (("crop_size", crop_size), ("resize_short", resize_short)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise VtdlError(f"{owner}: {name} must be an integer >= 1, got {value!r}")
    if resize_short < crop_size:
        raise VtdlError(
            f"{owner}: resize_short ({resize_short}) is smaller than crop_size ({crop_size})"
        )


def _as_frames(clip: Tensor | np.ndarray) -> Tensor:
    """A (T, H, W, 3) uint8 clip as a (T, 3, H, W) uint8 tensor view."""
    clip = torch.as_tensor(clip)
    if clip.dtype != torch.uint8 or clip.dim() != 4 or clip.shape[-1] != 3 or clip.shape[0] < 1:
        raise ValueError(
            f"expected a uint8 clip of shape (T, H, W, 3), got {clip.dtype} {tuple(clip.shape)}"
        )
    return clip.permute(0, 3, 1, 2)


def _resize_short(frames: Tensor, size: int) -> Tensor:
    """Resize (T, C, H, W) so that its short side is `size` (aspect kept); no-op if it is.

    torchvision's `resize(frames, [size], antialias=True)`: the long side becomes
    int(size * long / short), bilinear with antialiasing (uint8 stays uint8).
    """
    height, width = frames.shape[-2:]
    if min(height, width) == size:
        return frames
    if height <= width:
        shape = (size, int(size * width / height))
    else:
        shape = (int(size * height / width), size)
    return nnf.interpolate(frames, size=shape, mode="bilinear", antialias=True, align_corners=False)


def _grey(frames: Tensor) -> Tensor:
    """(..., 1, H, W) luma of (..., 3, H, W) RGB, with torchvision's ITU-R 601 weights."""
    r, g, b = frames.unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(image: Tensor, other: Tensor, factor: float | Tensor) -> Tensor:
    """factor * image + (1 - factor) * other, clamped to [0, 1] (torchvision's `_blend`)."""
    out = factor * image
    return out.add_((1.0 - factor) * other).clamp_(0.0, 1.0)  # in place: one tensor less


def adjust_brightness(frames: Tensor, factor: float | Tensor) -> Tensor:
    """torchvision's blend with a black image: the black term adds exactly 0, so it is left out."""
    return (factor * frames).clamp_(0.0, 1.0)


def adjust_contrast(frames: Tensor, factor: float) -> Tensor:
    """Blend each frame with its mean grey level (per frame, as PIL and torchvision do)."""
    return _blend(frames, _grey(frames).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(frames: Tensor, factor: float) -> Tensor:
    return _blend(frames, _grey(frames), factor)


def _centre_crop(frames: Tensor, size: int) -> Tensor:
    """torchvision's `center_crop` of a frame at least `size` on each side."""
    height, width = frames.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return frames[..., top : top + size, left : left + size]


def _to_unit_float(frames: Tensor) -> Tensor:
    return frames.to(torch.float32).mul_(1.0 / 255.0)


def _finish(frames: Tensor, normalize: bool) -> Tensor:
    """(T, C, H, W) float in [0, 1] -> normalised (C, T, H, W) contiguous float32.

    `frames` is this module's own intermediate: the layout copy comes first and the
    normalisation then works in place on it (the same arithmetic, two tensors fewer).
    """
    return _normalise_in_place(frames.permute(1, 0, 2, 3).contiguous(), normalize)


def _finish_bytes(frames: Tensor, normalize: bool) -> Tensor:
    """`_finish(_to_unit_float(frames), normalize)` for uint8 (T, C, H, W) frames that need no
    float work in between: the layout copy moves bytes instead of floats (a quarter of the
    memory traffic; 1.3 of a 16x112^2 clip's 10 ms went to the float copy). Every step is
    element-wise, so the result has the same bits."""
    return _normalise_in_place(_to_unit_float(frames.permute(1, 0, 2, 3).contiguous()), normalize)


def _normalise_in_place(clip: Tensor, normalize: bool) -> Tensor:
    """Subtract the ImageNet mean and divide by its std per channel of a (C, T, H, W) clip."""
    if normalize:
        clip.sub_(_MEAN_CT.to(clip.dtype)).div_(_STD_CT.to(clip.dtype))
    return clip


def rotate_crop(frames: Tensor, angle: float, top: int, left: int, size: int) -> Tensor:
    """Rotate (T, C, H, W) float frames by `angle` degrees about the centre, then crop.

    Equal (to interpolation precision) to torchvision's bilinear `rotate(frames, angle)`
    (counter-clockwise, not expanded, black fill) followed by `crop(top, left, size, size)`,
    but samples only the crop's pixels.
    """
    if angle == 0:
        return frames[..., top : top + size, left : left + size]
    num, _, height, width = frames.shape
    rad = math.radians(angle)
    # float32 numpy arithmetic: the same IEEE operations (and so the same bits) as torch's
    # float32 ops with the Python scalars cast to float32, at a third of the cost for a grid
    # this small (dispatch overhead).
    cos, sin, f32 = np.float32(math.cos(rad)), np.float32(math.sin(rad)), np.float32
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ys = (np.arange(size, dtype=f32) + f32(top - cy))[:, None]
    xs = (np.arange(size, dtype=f32) + f32(left - cx))[None, :]
    # An output pixel shows the source pixel that the counter-clockwise rotation (y axis
    # pointing down) moves onto it: apply the inverse rotation to its centre-relative position.
    src_x = cos * xs - sin * ys + f32(cx)
    src_y = sin * xs + cos * ys + f32(cy)
    # grid_sample's normalised coordinates with align_corners=False: pixel centres at (2i+1)/n-1.
    grid = np.empty((size, size, 2), dtype=f32)
    grid[..., 0] = (f32(2) * src_x + f32(1)) / f32(width) - f32(1)
    grid[..., 1] = (f32(2) * src_y + f32(1)) / f32(height) - f32(1)
    grid = torch.from_numpy(grid).to(frames.device, frames.dtype)
    grid = grid.unsqueeze(0).expand(num, -1, -1, -1)
    return nnf.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def adjust_hue(frames: Tensor, hue_factor: float) -> Tensor:
    """Rotate the hue of (..., 3, H, W) float RGB images in [0, 1] by `hue_factor` turns.

    Same result as torchvision's `adjust_hue` (HSV hue shift, saturation and value kept, ~1e-6)
    but about three times faster on CPU: it avoids the RGB->HSV->RGB round trip and rebuilds
    each channel from (value V, chroma C, hue h in sixths of a turn) with the closed form
    c_n = V - C * clamp(min(k_n, 4 - k_n), 0, 1), k_n = (n + h) mod 6, n = 5, 3, 1 for R, G, B.
    Only element-wise arithmetic is used because `where`, `max` with indices and `remainder`
    are several times slower than plain arithmetic on CPU.
    """
    r, g, b = frames.unbind(-3)
    value = torch.maximum(torch.maximum(r, g), b)
    chroma = value - torch.minimum(torch.minimum(r, g), b)
    # One-hot masks of the largest channel (ties go to the first, as any choice gives the same
    # hue); sector 0/2/4 for red/green/blue plus the position inside it.
    is_r = (r == value).to(frames.dtype)
    is_g = (g == value).to(frames.dtype).mul_(1 - is_r)
    is_b = 1 - is_r - is_g
    hue6 = is_r * (g - b) + is_g * (b - r + 2 * chroma) + is_b * (r - g + 4 * chroma)
    # Grey pixels (chroma 0) get an arbitrary hue: the chroma factor below cancels it.
    hue6.div_(chroma.clamp_min(1e-12)).add_(6.0 * hue_factor)
    hue6.sub_(torch.floor(hue6 * (1.0 / 6.0)).mul_(6.0))  # into [0, 6)
    out = torch.empty_like(frames)
    for channel, offset in enumerate((5.0, 3.0, 1.0)):
        k = hue6 + offset  # in [1, 11): one subtraction of 6 brings it into [0, 6)
        k.sub_((k >= 6.0).to(frames.dtype).mul_(6.0))
        weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
        torch.addcmul(value, chroma, weight, value=-1.0, out=out.select(-3, channel))
    return out


# The factor of each jitter operation that leaves an image unchanged.
_IDENTITY = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}


def _is_identity(op: int, params: ClipAugmentParams) -> bool:
    """Whether jitter operation `op` would leave the image unchanged (strength 0): skipped."""
    name = JITTER_OPS[op]
    return getattr(params, name) == _IDENTITY[name]


def _jitter_op(frames: Tensor, op: int, params: ClipAugmentParams) -> Tensor:
    name = JITTER_OPS[op]
    if name == "brightness":
        return adjust_brightness(frames, params.brightness)
    if name == "contrast":
        # Per-frame grey mean, as the original's per-image PIL contrast does.
        return adjust_contrast(frames, params.contrast)
    if name == "saturation":
        return adjust_saturation(frames, params.saturation)
    return adjust_hue(frames, params.hue)


class ClipAugment:
    """Clip-consistent random spatial augmentation for training (docs/method.md §2).

    Call it with a uint8 clip (T, H, W, 3), as read from the frame store, to get a float32
    (3, T, crop_size, crop_size) tensor; every frame gets the same rotation, crop and jitter.
    Randomness comes from `generator` (or torch's global generator when None, which DataLoader
    seeds per worker).
    """

    def __init__(
        self,
        crop_size: int,
        resize_short: int,
        rotation: float = 10.0,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.25,
        hue: float = 0.5,
        faithful_jitter: bool = False,
        normalize: bool = True,
    ) -> None:
        owner = type(self).__name__
        _check_sizes(owner, crop_size, resize_short)
        for name, value in (
            ("rotation", rotation),
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
            ("hue", hue),
        ):
            _check_nonnegative(owner, name, value)
        if hue > 0.5:
            raise VtdlError(f"{owner}: hue must be in [0, 0.5], got {hue!r}")
        self.crop_size = crop_size
        self.resize_short = resize_short
        self.rotation = float(rotation)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.faithful_jitter = faithful_jitter
        self.normalize = normalize

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, "
            f"resize_short={self.resize_short}, rotation={self.rotation}, "
            f"brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, "
            f"faithful_jitter={self.faithful_jitter}, normalize={self.normalize})"
        )

    def sample_params(
        self, height: int, width: int, generator: torch.Generator | None = None
    ) -> ClipAugmentParams:
        """Draw one clip's parameters for resized frames of `height` x `width` pixels."""
        # The draws in a fixed order (a seed gives the same parameters); .tolist() / .item()
        # convert each tensor once instead of element by element.
        order = tuple(torch.randperm(len(JITTER_OPS), generator=generator).tolist())
        u_angle, u_b, u_c, u_s, u_h = torch.rand(
            5, generator=generator, dtype=torch.float64
        ).tolist()
        top = torch.randint(0, height - self.crop_size + 1, (1,), generator=generator).item()
        left = torch.randint(0, width - self.crop_size + 1, (1,), generator=generator).item()

        # torchvision ColorJitter ranges: factor ~ U[max(0, 1 - s), 1 + s], hue ~ U[-h, h].
        def factor(u: float, strength: float) -> float:
            low = max(0.0, 1.0 - strength)
            return low + u * (1.0 + strength - low)

        return ClipAugmentParams(
            angle=(2.0 * u_angle - 1.0) * self.rotation,
            top=top,
            left=left,
            order=order,
            brightness=factor(u_b, self.brightness),
            contrast=factor(u_c, self.contrast),
            saturation=factor(u_s, self.saturation),
            hue=(2.0 * u_h - 1.0) * self.hue,
        )

    def resize(self, clip: Tensor | np.ndarray) -> Tensor:
        """The clip as (T, 3, H', W') uint8 frames with short side `resize_short`."""
        return _resize_short(_as_frames(clip), self.resize_short)

    def apply(self, frames: Tensor, params: ClipAugmentParams) -> Tensor:
        """Augment resized (T, 3, H', W') uint8 frames (from `resize`) with given parameters."""
        # The original overwrites its result with each jitter operation applied to the input,
        # so with `faithful_jitter` only the last operation of the shuffled order survives.
        ops = params.order[-1:] if self.faithful_jitter else params.order
        ops = tuple(op for op in ops if not _is_identity(op, params))
        if params.angle == 0:  # a plain crop: cut it before converting the pixels to float
            size, top, left = self.crop_size, params.top, params.left
            frames = frames[..., top : top + size, left : left + size]
            if not ops:
                return _finish_bytes(frames, self.normalize)
            frames = _to_unit_float(frames)
        else:
            frames = rotate_crop(
                _to_unit_float(frames), params.angle, params.top, params.left, self.crop_size
            )
        for op in ops:
            frames = _jitter_op(frames, op, params)
        return _finish(frames, self.normalize)

    def __call__(
        self, clip: Tensor | np.ndarray, generator: torch.Generator | None = None
    ) -> Tensor:
        """Augment a uint8 (T, H, W, 3) clip; returns float32 (3, T, crop_size, crop_size)."""
        frames = self.resize(clip)
        params = self.sample_params(frames.shape[-2], frames.shape[-1], generator)
        return self.apply(frames, params)


class ClipEval:
    """Deterministic evaluation transform: resize short side, centre crop, normalise.

    uint8 (T, H, W, 3) -> float32 (3, T, crop_size, crop_size).
    """

    def __init__(self, crop_size: int, resize_short: int, normalize: bool = True) -> None:
        _check_sizes(type(self).__name__, crop_size, resize_short)
        self.crop_size = crop_size
        self.resize_short = resize_short
        self.normalize = normalize

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(crop_size={self.crop_size}, "
            f"resize_short={self.resize_short}, normalize={self.normalize})"
        )

    def __call__(self, clip: Tensor | np.ndarray) -> Tensor:
        """Centre-crop a uint8 (T, H, W, 3) clip; returns float32 (3, T, crop_size, crop_size)."""
        frames = _resize_short(_as_frames(clip), self.resize_short)
        return _finish_bytes(_centre_crop(frames, self.crop_size), self.normalize)


# ------------------------------------------------------------------ augmentation on the device

AUGMENT_ON = ("auto", "loader", "device")

# Columns of the parameter rows that `DeviceClipAugment` hands from the loader to the device.
_ANGLE, _TOP, _LEFT, _WIN_TOP, _WIN_LEFT, _HEIGHT, _WIDTH = range(7)
_FACTOR = {name: 7 + i for i, name in enumerate(JITTER_OPS)}  # brightness .. hue
_ORDER = 7 + len(JITTER_OPS)  # then the jitter order, one column per position
_PARAM_COLUMNS = _ORDER + len(JITTER_OPS)


def augment_place(augment_on: str, device: torch.device | str) -> str:
    """Where clips are augmented: "loader" (per clip, in the loading process) or "device".

    `augment_on` is `pretrain.augment_on`: "auto" augments on the device when it is CUDA (a
    loader core augments far fewer 16x224^2 clips per second than the card trains on) and in
    the loader otherwise, where the per-clip path is the default.
    """
    if augment_on not in AUGMENT_ON:
        raise VtdlError(f"pretrain.augment_on: {augment_on!r} is not one of {AUGMENT_ON}")
    if augment_on == "auto":
        return "device" if torch.device(device).type == "cuda" else "loader"
    return augment_on


def _window_half(crop_size: int, rotation: float) -> int:
    """Half the side of a square that holds every source pixel of a rotated crop (and the
    second bilinear tap): the crop's half-diagonal reach is (crop - 1) / 2 * (|cos| + |sin|),
    largest at the largest angle up to 45 degrees."""
    rad = math.radians(min(rotation, 45.0))
    return math.ceil((crop_size - 1) / 2 * (math.cos(rad) + math.sin(rad))) + 1


class DeviceClipAugment:
    """`ClipAugment` split in two, so that the float work runs on the device, in batch.

    In the loader (`__call__`, the signature of `ClipAugment`): the clip is resized and its
    parameters drawn exactly as `ClipAugment` draws them (same generator calls, so the same
    parameters), and a fixed-size uint8 window holding every pixel the rotated crop reads is cut
    out, channels last: what travels to the device is uint8 and a fixed size, so clips of
    videos with other aspect ratios still form a batch.

    On the device (`apply`): the collated windows and parameter rows of a batch are turned into
    the crops in one `grid_sample`, then jittered (each clip's operations in its own order) and
    normalised, float32 (B, 3, T, crop, crop). The result equals `ClipAugment`'s for the same
    draws up to float rounding (tests check both paths against each other).
    """

    def __init__(self, augment: ClipAugment) -> None:
        self.augment = augment
        self.half = _window_half(augment.crop_size, augment.rotation)
        self.window = 2 * self.half + 2

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.augment!r})"

    def __call__(
        self, clip: Tensor | np.ndarray, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """uint8 (T, H, W, 3) clip -> {"frames": uint8 (T, S, S, 3), "params": float64 row}."""
        frames = self.augment.resize(clip)
        height, width = frames.shape[-2:]
        params = self.augment.sample_params(height, width, generator)
        crop = self.augment.crop_size
        # Centre of the crop's source region: the crop centre, rotated back about the frame's.
        rad = math.radians(params.angle)
        cos, sin = math.cos(rad), math.sin(rad)
        cx, cy = (width - 1) / 2, (height - 1) / 2
        dx, dy = params.left + (crop - 1) / 2 - cx, params.top + (crop - 1) / 2 - cy
        win_left = math.floor(cos * dx - sin * dy + cx) - self.half
        win_top = math.floor(sin * dx + cos * dy + cy) - self.half
        window = torch.zeros((frames.shape[0], self.window, self.window, 3), dtype=torch.uint8)
        # The part of the window inside the frame; the rest stays 0, the black of the rotation.
        y0, x0 = max(win_top, 0), max(win_left, 0)
        y1, x1 = min(win_top + self.window, height), min(win_left + self.window, width)
        if y1 > y0 and x1 > x0:
            window[:, y0 - win_top : y1 - win_top, x0 - win_left : x1 - win_left] = frames[
                :, :, y0:y1, x0:x1
            ].permute(0, 2, 3, 1)
        row = torch.empty(_PARAM_COLUMNS, dtype=torch.float64)
        row[:_ORDER] = torch.tensor(
            [params.angle, params.top, params.left, win_top, win_left, height, width]
            + [getattr(params, name) for name in JITTER_OPS],
            dtype=torch.float64,
        )
        row[_ORDER:] = torch.tensor(params.order, dtype=torch.float64)
        return {"frames": window, "params": row}

    def apply(self, views: dict[str, Tensor], device: torch.device | str | None = None) -> Tensor:
        """Augment a collated batch {"frames": uint8 (B, T, S, S, 3), "params": (B, P)} on
        `device` (default: where the frames are); returns float32 (B, 3, T, crop, crop)."""
        frames = views["frames"].to(device or views["frames"].device, non_blocking=True)
        params = views["params"].to(torch.float64)  # small: drawn and kept on the CPU
        batch, num, size = frames.shape[0], frames.shape[1], self.window
        crop = self.augment.crop_size
        # (B, T*3, S, S): one sampling grid per clip serves all its frames and channels.
        x = frames.permute(0, 1, 4, 2, 3).reshape(batch, num * 3, size, size)
        x = _to_unit_float(x)
        grid = self._grid(params, crop, size).to(x.device, non_blocking=True)
        x = nnf.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = x.view(batch, num, 3, crop, crop)
        for rows, ops in self._jitter_groups(params):
            whole, index = rows.numel() == batch, rows.to(x.device)
            part = x if whole else x[index]
            for name in ops:
                factor = params[rows, _FACTOR[name]].to(torch.float32)
                part = _batched_jitter(part, name, factor.to(x.device))
            if whole:
                x = part
            else:
                x[index] = part
        # The layout copy first, then the normalisation in place on it (as per clip).
        x = x.permute(0, 2, 1, 3, 4).contiguous()
        if self.augment.normalize:
            x.sub_(_MEAN_CT.to(x.device)).div_(_STD_CT.to(x.device))
        return x

    def _jitter_groups(self, params: Tensor) -> list[tuple[Tensor, tuple[str, ...]]]:
        """The batch's rows grouped by the jitter operations they run, in their order: each
        group is gathered and scattered once, not once per operation (a 3x cut of the copies
        at three operations). An operation of strength 0 never changes anything (as per clip)."""
        orders = params[:, _ORDER:].to(torch.int64)
        if self.augment.faithful_jitter:
            orders = orders[:, -1:]
        groups: dict[tuple[str, ...], list[int]] = {}
        for row, order in enumerate(orders.tolist()):
            ops = tuple(JITTER_OPS[op] for op in order if getattr(self.augment, JITTER_OPS[op]))
            groups.setdefault(ops, []).append(row)
        return [(torch.tensor(rows), ops) for ops, rows in groups.items() if ops]

    @staticmethod
    def _grid(params: Tensor, crop: int, size: int) -> Tensor:
        """grid_sample's (B, crop, crop, 2) grid: `rotate_crop`'s source positions, in the
        window's normalised coordinates."""
        rad = torch.deg2rad(params[:, _ANGLE]).view(-1, 1, 1)
        cos, sin = torch.cos(rad), torch.sin(rad)
        cx = ((params[:, _WIDTH] - 1) / 2).view(-1, 1, 1)
        cy = ((params[:, _HEIGHT] - 1) / 2).view(-1, 1, 1)
        steps = torch.arange(crop, dtype=torch.float64)
        xx = (steps.view(1, 1, -1) + params[:, _LEFT].view(-1, 1, 1)) - cx
        yy = (steps.view(1, -1, 1) + params[:, _TOP].view(-1, 1, 1)) - cy
        src_x = cos * xx - sin * yy + cx - params[:, _WIN_LEFT].view(-1, 1, 1)
        src_y = sin * xx + cos * yy + cy - params[:, _WIN_TOP].view(-1, 1, 1)
        grid = torch.stack(((2 * src_x + 1) / size - 1, (2 * src_y + 1) / size - 1), dim=-1)
        return grid.to(torch.float32)


def _batched_jitter(frames: Tensor, name: str, factor: Tensor) -> Tensor:
    """One jitter operation on (n, T, 3, H, W) frames, with one factor per clip."""
    if name == "hue":
        return adjust_hue(frames, factor.view(-1, 1, 1, 1))
    factor = factor.view(-1, 1, 1, 1, 1)
    if name == "brightness":
        return (frames * factor).clamp_(0.0, 1.0)
    if name == "contrast":
        return _blend(frames, _grey(frames).mean(dim=(-3, -2, -1), keepdim=True), factor)
    return _blend(frames, _grey(frames), factor)


def temporal_consistent_augmentation_with_lambda(
    x: Tensor,
    alpha: float = 0.1,
    generator: torch.Generator | None = None,
    global_batch: int | None = None,
    offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """TCA of a batch, also returning the drawn lambda (a float32 scalar tensor on x's device).

    See `temporal_consistent_augmentation`. lambda ~ U(0, alpha) is drawn once for the batch
    (lambda = 0 when alpha = 0); each sample i gets its own static frame index k_i.
    `global_batch`, `offset`: x is rows offset.. of a batch of `global_batch` samples split
    over data-parallel ranks; the draws are those of the whole batch, so each rank augments its
    share exactly as one process would augment the whole batch.
    """
    if not (isinstance(alpha, int | float) and 0.0 <= alpha < 1.0):
        raise VtdlError(f"tca_alpha must be in [0, 1), got {alpha!r}")
    if x.dim() != 5 or x.shape[2] < 1:
        raise ValueError(f"expected a (B, C, T, H, W) batch, got shape {tuple(x.shape)}")
    batch, _, frames = x.shape[:3]
    drawn = batch if global_batch is None else global_batch
    if not 0 <= offset <= drawn - batch:
        raise ValueError(f"rows {offset}..{offset + batch} lie outside a batch of {drawn}")
    # Draw on the generator's device (CPU for a CPU generator) so a seed gives the same draw
    # whatever device x lives on; without a generator draw on x's device (no host sync).
    draw_device = generator.device if generator is not None else x.device
    lam = torch.rand((), generator=generator, device=draw_device) * alpha
    k = torch.randint(0, frames, (drawn,), generator=generator, device=draw_device)
    lam, k = lam.to(x.device), k[offset : offset + batch].to(x.device)
    static = x[torch.arange(batch, device=x.device), :, k]  # (B, C, H, W): frame k_i of sample i
    weight = lam.to(x.dtype)
    out = x * (1 - weight) + static.unsqueeze(2) * weight
    return out, lam


def temporal_consistent_augmentation(
    x: Tensor,
    alpha: float = 0.1,
    generator: torch.Generator | None = None,
    global_batch: int | None = None,
    offset: int = 0,
) -> Tensor:
    """Temporal Consistent Augmentation (docs/method.md §3) of a (B, C, T, H, W) batch.

    Draws one lambda ~ U(0, alpha) for the whole batch and one frame index k_i per sample, and
    returns x'_j = (1 - lambda) x_j + lambda x_{k_i} for every frame j: a static frame is blended
    in, so every temporal difference (any order) is only scaled by (1 - lambda). Keeps x's
    dtype and device (works under autocast and on CUDA). `global_batch`, `offset`: see
    `temporal_consistent_augmentation_with_lambda`.
    """
    out, _ = temporal_consistent_augmentation_with_lambda(x, alpha, generator, global_batch, offset)
    return out
