"""Tests for vtdl.augment: clip-consistent spatial augmentation and TCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

from vtdl.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    JITTER_OPS,
    ClipAugment,
    ClipAugmentParams,
    ClipEval,
    DeviceClipAugment,
    adjust_hue,
    augment_place,
    rotate_crop,
    temporal_consistent_augmentation,
    temporal_consistent_augmentation_with_lambda,
)
from vtdl.errors import VtdlError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_clip(t: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (t, h, w, 3), dtype=torch.uint8, generator=_gen(seed))


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth-ish colourful (H, W, 3) uint8 image (mixes grey, saturated and tied pixels)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    img[:4, :4] = 128  # grey: hue undefined
    img[4:8, :4, 1] = img[4:8, :4, 0]  # red == green ties
    return torch.from_numpy(img)


# ---------------------------------------------------------------- TCA


def test_tca_scales_every_temporal_difference_by_one_minus_lambda():
    x = torch.randn(4, 3, 8, 5, 6, generator=_gen(1))
    out, lam = temporal_consistent_augmentation_with_lambda(x, alpha=0.1, generator=_gen(2))
    assert 0.0 < float(lam) < 0.1
    for n in (1, 2, 3):
        assert torch.allclose(
            torch.diff(out, n=n, dim=2), (1 - lam) * torch.diff(x, n=n, dim=2), atol=1e-5
        )
    # A non-trivial change: appearance is perturbed.
    assert not torch.allclose(out, x)


def test_tca_blends_one_frame_of_the_same_sample_per_sample():
    x = torch.randn(6, 2, 7, 3, 3, generator=_gen(3))
    out, lam = temporal_consistent_augmentation_with_lambda(x, alpha=0.5, generator=_gen(4))
    static = (out - (1 - lam) * x) / lam  # (B, C, T, H, W), must be x[i, :, k_i] for every t
    chosen = []
    for i in range(x.shape[0]):
        assert torch.allclose(static[i], static[i, :, :1].expand_as(static[i]), atol=1e-4)
        matches = [
            k for k in range(x.shape[2]) if torch.allclose(static[i, :, 0], x[i, :, k], atol=1e-4)
        ]
        assert len(matches) == 1
        chosen.append(matches[0])
    assert len(set(chosen)) > 1  # frame indices are drawn per sample, not per batch


def test_tca_lambda_range_and_alpha_zero():
    x = torch.rand(2, 3, 4, 2, 2)
    lams = [
        float(temporal_consistent_augmentation_with_lambda(x, 0.1, _gen(s))[1]) for s in range(200)
    ]
    assert min(lams) >= 0.0 and max(lams) < 0.1
    assert max(lams) > 0.08 and min(lams) < 0.02  # spans the interval
    out, lam = temporal_consistent_augmentation_with_lambda(x, 0.0, _gen(0))
    assert float(lam) == 0.0 and torch.equal(out, x)


def test_tca_is_deterministic_for_a_generator_seed():
    x = torch.randn(3, 3, 5, 4, 4, generator=_gen(0))
    a = temporal_consistent_augmentation(x, generator=_gen(7))
    b = temporal_consistent_augmentation(x, generator=_gen(7))
    c = temporal_consistent_augmentation(x, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_tca_keeps_dtype_and_works_under_autocast():
    x = torch.randn(2, 3, 4, 3, 3, generator=_gen(0))
    out16 = temporal_consistent_augmentation(x.to(torch.bfloat16), generator=_gen(1))
    assert out16.dtype == torch.bfloat16
    ref = temporal_consistent_augmentation(x, generator=_gen(1))
    assert torch.allclose(out16.float(), ref, atol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = temporal_consistent_augmentation(x, generator=_gen(1))
    assert torch.allclose(out.float(), ref, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tca_on_cuda_matches_cpu_for_a_cpu_generator():
    x = torch.randn(2, 3, 4, 3, 3, generator=_gen(0))
    ref = temporal_consistent_augmentation(x, generator=_gen(1))
    out = temporal_consistent_augmentation(x.cuda(), generator=_gen(1))
    assert out.is_cuda and torch.allclose(out.cpu(), ref, atol=1e-6)
    with torch.autocast("cuda", dtype=torch.float16):
        half = temporal_consistent_augmentation(x.cuda().half())
    assert half.dtype == torch.float16


def test_tca_rejects_bad_alpha_and_shape():
    with pytest.raises(VtdlError, match="tca_alpha"):
        temporal_consistent_augmentation(torch.zeros(1, 3, 2, 2, 2), alpha=1.5)
    with pytest.raises(ValueError, match="B, C, T, H, W"):
        temporal_consistent_augmentation(torch.zeros(3, 2, 2, 2))


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("factor", [-0.5, -0.31, 0.0, 0.17, 0.5])
def test_adjust_hue_matches_torchvision(factor):
    img = _texture(12, 10).permute(2, 0, 1).float().div(255).unsqueeze(0).repeat(2, 1, 1, 1)
    assert torch.allclose(adjust_hue(img, factor), tvf.adjust_hue(img, factor), atol=1e-5)


@pytest.mark.parametrize("angle", [0.0, 7.5, -9.0])
def test_rotate_crop_matches_torchvision_rotate_then_crop(angle):
    frames = torch.rand(3, 3, 20, 27, generator=_gen(0))
    ref = tvf.crop(
        tvf.rotate(frames, angle, interpolation=InterpolationMode.BILINEAR), 2, 5, 16, 16
    )
    assert torch.allclose(rotate_crop(frames, angle, 2, 5, 16), ref, atol=1e-4)


# ---------------------------------------------------------------- ClipAugment


def _reference(aug: ClipAugment, clip: torch.Tensor, p: ClipAugmentParams, ops) -> torch.Tensor:
    """The textbook pipeline with torchvision's own functions, frame batch at a time."""
    x = tvf.resize(clip.permute(0, 3, 1, 2), [aug.resize_short], antialias=True)
    x = x.float() / 255
    x = tvf.rotate(x, p.angle, interpolation=InterpolationMode.BILINEAR)
    x = tvf.crop(x, p.top, p.left, aug.crop_size, aug.crop_size)
    fns = {
        "brightness": lambda im: tvf.adjust_brightness(im, p.brightness),
        "contrast": lambda im: tvf.adjust_contrast(im, p.contrast),
        "saturation": lambda im: tvf.adjust_saturation(im, p.saturation),
        "hue": lambda im: tvf.adjust_hue(im, p.hue),
    }
    for op in ops:
        x = fns[JITTER_OPS[op]](x)
    x = tvf.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return x.permute(1, 0, 2, 3)


def test_output_shape_dtype_and_numpy_input():
    aug = ClipAugment(crop_size=16, resize_short=20)
    clip = _random_clip(5, 20, 26)
    out = aug(clip, _gen(0))
    assert out.shape == (3, 5, 16, 16) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(aug(clip.numpy(), _gen(0)), out)


def test_resize_short_side_keeps_aspect():
    aug = ClipAugment(crop_size=16, resize_short=20)
    assert aug.resize(_random_clip(2, 40, 60)).shape == (2, 3, 20, 30)
    assert aug.resize(_random_clip(2, 60, 40)).shape == (2, 3, 30, 20)
    assert aug(_random_clip(2, 60, 40), _gen(0)).shape == (3, 2, 16, 16)


def test_chained_pipeline_matches_torchvision_reference():
    aug = ClipAugment(crop_size=16, resize_short=20)
    clip = _random_clip(4, 30, 37, seed=2)
    frames = aug.resize(clip)
    for seed in range(3):
        p = aug.sample_params(frames.shape[-2], frames.shape[-1], _gen(seed))
        ref = _reference(aug, clip, p, p.order)
        # Resized uint8 in both paths; jitter differences are interpolation-level only.
        assert torch.allclose(aug.apply(frames, p), ref, atol=2e-3)


def test_faithful_jitter_applies_only_the_last_operation_of_the_order():
    chained = ClipAugment(crop_size=16, resize_short=20)
    faithful = ClipAugment(crop_size=16, resize_short=20, faithful_jitter=True)
    clip = _random_clip(3, 20, 24, seed=5)
    frames = faithful.resize(clip)
    for seed in range(4):
        p = faithful.sample_params(20, 24, _gen(seed))
        out = faithful.apply(frames, p)
        assert torch.allclose(out, _reference(faithful, clip, p, p.order[-1:]), atol=2e-3)
        # Not the chained result and not any other single operation.
        assert not torch.allclose(out, chained.apply(frames, p), atol=1e-2)
        for op in p.order[:-1]:
            assert not torch.allclose(out, _reference(faithful, clip, p, [op]), atol=1e-2)


def test_same_parameters_for_every_frame():
    aug = ClipAugment(crop_size=16, resize_short=20)
    clip = _random_clip(6, 20, 25, seed=3)
    frames = aug.resize(clip)
    p = aug.sample_params(20, 25, _gen(11))
    whole = aug.apply(frames, p)
    one_by_one = torch.cat([aug.apply(frames[t : t + 1], p) for t in range(6)], dim=1)
    assert torch.allclose(whole, one_by_one, atol=1e-5)


@pytest.mark.parametrize("faithful", [False, True])
def test_identical_frames_stay_identical(faithful):
    aug = ClipAugment(crop_size=16, resize_short=20, faithful_jitter=faithful)
    clip = _texture(24, 30).unsqueeze(0).repeat(5, 1, 1, 1)
    for seed in range(3):
        out = aug(clip, _gen(seed))
        assert torch.allclose(out, out[:, :1].expand_as(out), atol=1e-6)


def test_shifted_frames_keep_their_shift():
    # Frame t is the texture rolled by 2t pixels to the right; every frame gets the same crop
    # and the same per-pixel colour changes, so the output shows the same shift. Contrast is
    # off: it blends towards the grey mean of each frame's crop, which moving content changes
    # (as in the original, where the jitter also follows the crop).
    aug = ClipAugment(crop_size=16, resize_short=20, rotation=0.0, contrast=0.0)
    base = _texture(20, 28, seed=4)
    clip = torch.stack([torch.roll(base, 2 * t, dims=1) for t in range(4)])
    out = aug(clip, _gen(9))
    for t in range(1, 4):
        s = 2 * t
        assert torch.allclose(out[:, t, :, s:], out[:, 0, :, :-s], atol=1e-4)


def test_normalisation_and_unit_range():
    clip = _random_clip(3, 20, 20, seed=6)
    raw = ClipAugment(crop_size=16, resize_short=20, normalize=False)(clip, _gen(1))
    norm = ClipAugment(crop_size=16, resize_short=20)(clip, _gen(1))
    assert raw.min() >= 0.0 and raw.max() <= 1.0
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    assert torch.allclose(norm, (raw - mean) / std, atol=1e-5)


def test_determinism_with_a_generator():
    aug = ClipAugment(crop_size=16, resize_short=20)
    clip = _random_clip(4, 22, 30, seed=8)
    assert torch.equal(aug(clip, _gen(3)), aug(clip, _gen(3)))
    assert not torch.equal(aug(clip, _gen(3)), aug(clip, _gen(4)))
    torch.manual_seed(5)
    a = aug(clip)
    torch.manual_seed(5)
    assert torch.equal(a, aug(clip))


def test_parameter_ranges():
    aug = ClipAugment(crop_size=16, resize_short=20)
    params = [aug.sample_params(20, 23, _gen(s)) for s in range(300)]
    assert all(-10 <= p.angle <= 10 for p in params)
    assert all(0.5 <= p.brightness <= 1.5 and 0.5 <= p.contrast <= 1.5 for p in params)
    assert all(0.75 <= p.saturation <= 1.25 and -0.5 <= p.hue <= 0.5 for p in params)
    assert all(sorted(p.order) == [0, 1, 2, 3] for p in params)
    assert {p.top for p in params} == set(range(5))
    assert {p.left for p in params} == set(range(8))
    assert len({p.order[-1] for p in params}) == 4  # each op can be the surviving one


def test_bad_settings_and_clip_raise():
    with pytest.raises(VtdlError, match="resize_short"):
        ClipAugment(crop_size=32, resize_short=28)
    with pytest.raises(VtdlError, match="hue"):
        ClipAugment(crop_size=16, resize_short=20, hue=0.6)
    with pytest.raises(VtdlError, match="rotation"):
        ClipAugment(crop_size=16, resize_short=20, rotation=-1)
    with pytest.raises(VtdlError, match="crop_size"):
        ClipEval(crop_size=0, resize_short=20)
    with pytest.raises(ValueError, match="uint8"):
        ClipAugment(crop_size=16, resize_short=20)(torch.zeros(2, 20, 20, 3))


# ---------------------------------------------------------------- ClipEval


def test_clip_eval_is_a_deterministic_centre_crop():
    clip = _random_clip(3, 20, 26, seed=9)
    ev = ClipEval(crop_size=16, resize_short=20)
    out = ev(clip)
    assert out.shape == (3, 3, 16, 16) and torch.equal(out, ev(clip))
    frames = clip.permute(3, 0, 1, 2).float() / 255  # (C, T, H, W)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1, 1)
    assert torch.allclose(out, (frames[:, :, 2:18, 5:21] - mean) / std, atol=1e-5)
    assert ClipEval(crop_size=16, resize_short=20)(_random_clip(2, 40, 52)).shape == (3, 2, 16, 16)


def test_a_jitter_of_strength_zero_is_skipped_and_changes_nothing(monkeypatch):
    """Strength 0 draws the identity factor; the operation is then not run at all."""
    import vtdl.augment as augment

    def fail(*_args):
        raise AssertionError("adjust_hue ran with hue strength 0")

    clip = torch.randint(0, 256, (3, 20, 26, 3), dtype=torch.uint8, generator=torch.Generator())
    aug = ClipAugment(16, 20, rotation=0.0, brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0)
    frames = aug.resize(clip)
    params = aug.sample_params(20, 26, torch.Generator().manual_seed(1))
    before = aug.apply(frames, params)
    monkeypatch.setattr(augment, "adjust_hue", fail)
    assert torch.equal(aug.apply(frames, params), before)


@pytest.mark.parametrize("normalize", [True, False])
def test_a_clip_with_no_float_work_gets_the_bits_of_the_float_path(normalize):
    """A plain crop without jitter (and the evaluation crop) is laid out as bytes, then made
    float: bit for bit what converting first and laying out the floats gives."""
    import vtdl.augment as augment

    def float_path(frames):  # the order every clip took before the byte path
        return augment._finish(augment._to_unit_float(frames), normalize)

    plain = ClipAugment(16, 20, rotation=0, brightness=0, contrast=0, saturation=0, hue=0,
                        normalize=normalize)  # fmt: skip
    for seed in range(20):
        clip = _random_clip(1 + seed % 8, 20 + seed, 26 + 2 * seed, seed=seed)
        frames = plain.resize(clip)
        params = plain.sample_params(*frames.shape[-2:], _gen(seed))
        crop = frames[..., params.top : params.top + 16, params.left : params.left + 16]
        out = plain.apply(frames, params)
        assert out.is_contiguous() and torch.equal(out, float_path(crop))
        centre = augment._centre_crop(augment._resize_short(augment._as_frames(clip), 20), 16)
        evaluated = ClipEval(16, 20, normalize=normalize)(clip)
        assert evaluated.is_contiguous() and torch.equal(evaluated, float_path(centre))


# ---------------------------------------------------------------- augmentation on the device


def _both_paths(aug: ClipAugment, clips: list[torch.Tensor], seed: int = 0):
    """(per-clip outputs stacked, device path's batch) for the same generator seeds."""
    device = DeviceClipAugment(aug)
    per_clip = torch.stack([aug(c, _gen(seed + i)) for i, c in enumerate(clips)])
    halves = [device(c, _gen(seed + i)) for i, c in enumerate(clips)]
    return per_clip, device.apply(default_collate(halves))


@pytest.mark.parametrize(
    ("options", "faithful"),
    [
        (
            {"rotation": 5.0, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0},
            False,
        ),
        ({"rotation": 10.0}, False),  # the paper's jitter (the defaults)
        ({"rotation": 10.0}, True),
        ({"rotation": 40.0, "contrast": 0.0, "hue": 0.1}, False),
        ({"rotation": 0.0, "brightness": 0, "contrast": 0, "saturation": 0, "hue": 0}, False),
    ],
)
def test_device_path_equals_the_per_clip_path_for_the_same_draws(options, faithful):
    aug = ClipAugment(crop_size=16, resize_short=20, faithful_jitter=faithful, **options)
    # Landscape, portrait and already-resized frames in one batch: the window has one size.
    shapes = [(24, 32), (32, 24), (20, 27), (30, 30)] * 3
    clips = [_random_clip(4, h, w, seed=i) for i, (h, w) in enumerate(shapes)]
    per_clip, batched = _both_paths(aug, clips)
    assert batched.shape == per_clip.shape == (len(clips), 3, 4, 16, 16)
    assert batched.dtype == torch.float32 and batched.is_contiguous()
    assert torch.allclose(batched, per_clip, atol=2e-4)


@pytest.mark.parametrize("faithful", [False, True])
def test_device_path_gives_a_clip_the_same_bits_in_any_batch(faithful):
    # The jitter runs per group of clips that share an order of operations: a clip must come
    # out the same whether it is jittered alone or gathered with the others of its group.
    aug = ClipAugment(
        crop_size=16, resize_short=20, rotation=10.0, hue=0.1, faithful_jitter=faithful
    )
    device = DeviceClipAugment(aug)
    halves = [device(_random_clip(4, 24, 32, seed=i), _gen(i)) for i in range(16)]
    orders = {tuple(h["params"][-len(JITTER_OPS) :].tolist()) for h in halves}
    assert len(orders) > 4  # several groups, each of a few clips
    batched = device.apply(default_collate(halves))
    alone = torch.cat([device.apply(default_collate([h])) for h in halves])
    assert torch.equal(batched, alone)


def test_device_path_loader_half_is_a_small_uint8_window_and_the_draws():
    aug = ClipAugment(crop_size=16, resize_short=20, rotation=10.0)
    device = DeviceClipAugment(aug)
    half = device(_random_clip(5, 40, 60), _gen(2))
    assert half["frames"].dtype == torch.uint8
    assert half["frames"].shape == (5, device.window, device.window, 3)
    # Holds the rotated crop's reach (16 * (cos 10 + sin 10) ~ 18.5 pixels) and no more than
    # a few pixels beyond it: far smaller than the frame that would otherwise travel.
    assert 19 <= device.window <= 24
    params = aug.sample_params(20, 30, _gen(2))
    assert half["params"][0].item() == pytest.approx(params.angle)
    assert half["params"][1:3].tolist() == [params.top, params.left]


def test_device_path_is_deterministic_for_a_generator_seed():
    aug = ClipAugment(crop_size=16, resize_short=20)
    device = DeviceClipAugment(aug)
    clip = _random_clip(4, 22, 30, seed=8)
    a, b, c = device(clip, _gen(3)), device(clip, _gen(3)), device(clip, _gen(4))
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["params"], b["params"])
    assert not torch.equal(a["params"], c["params"])
    batch = default_collate([a, c])
    assert torch.equal(device.apply(batch), device.apply(batch))


def test_device_path_unit_range_and_normalisation():
    clips = [_random_clip(3, 20, 26, seed=s) for s in range(4)]
    raw = ClipAugment(crop_size=16, resize_short=20, normalize=False)
    _, unit = _both_paths(raw, clips)
    assert unit.min() >= 0.0 and unit.max() <= 1.0
    _, norm = _both_paths(ClipAugment(crop_size=16, resize_short=20), clips)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    assert torch.allclose(norm, (unit - mean) / std, atol=1e-5)


@pytest.mark.parametrize("faithful", [False, True])
def test_device_path_gives_every_frame_of_a_clip_the_same_augmentation(faithful):
    # A static clip stays static (one rotation, crop and jitter per clip, not per frame), and
    # TCA after it only scales temporal differences, so it stays static too.
    aug = ClipAugment(crop_size=16, resize_short=20, rotation=10.0, faithful_jitter=faithful)
    clips = [_texture(24, 30, seed=s).unsqueeze(0).repeat(5, 1, 1, 1) for s in range(3)]
    _, out = _both_paths(aug, clips)
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-5)
    mixed = temporal_consistent_augmentation(out, 0.5, _gen(0))
    assert torch.allclose(mixed, mixed[:, :, :1].expand_as(mixed), atol=1e-5)


def test_device_path_keeps_a_shift_between_frames():
    aug = ClipAugment(crop_size=16, resize_short=20, rotation=0.0, contrast=0.0)
    base = _texture(20, 28, seed=4)
    clip = torch.stack([torch.roll(base, 2 * t, dims=1) for t in range(4)])
    _, out = _both_paths(aug, [clip], seed=9)
    for t in range(1, 4):
        s = 2 * t
        assert torch.allclose(out[0, :, t, :, s:], out[0, :, 0, :, :-s], atol=1e-4)


def test_augment_place():
    assert augment_place("auto", "cpu") == "loader"
    assert augment_place("auto", torch.device("cuda", 0)) == "device"
    assert augment_place("device", "cpu") == "device"
    assert augment_place("loader", "cuda") == "loader"
    with pytest.raises(VtdlError, match="augment_on"):
        augment_place("gpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_path_on_cuda_matches_the_cpu():
    aug = ClipAugment(crop_size=16, resize_short=20, rotation=10.0)
    device = DeviceClipAugment(aug)
    batch = default_collate([device(_random_clip(4, 24, 32, seed=s), _gen(s)) for s in range(4)])
    on_cuda = device.apply(batch, "cuda")
    assert on_cuda.device.type == "cuda"
    assert torch.allclose(on_cuda.cpu(), device.apply(batch), atol=1e-4)
