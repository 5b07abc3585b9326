"""Backbones, heads and initialisation: shapes, sizes, init statistics, gradients, errors."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vtdl.errors import VtdlError
from vtdl.models import (
    BACKBONES,
    BackboneWithHead,
    ClassifierHead,
    ProjectionHead,
    build_backbone,
    build_classifier_head,
    init_original,
)
from vtdl.models.i3d import same_padding

ALL_BACKBONES = ["small3d", "i3d", "r3d_18", "r2plus1d_18", "mc3_18", "c3d"]
FEATURE_DIM = {
    "small3d": 128,
    "i3d": 1024,
    "r3d_18": 512,
    "r2plus1d_18": 512,
    "mc3_18": 512,
    "c3d": 512,
}


@pytest.fixture(autouse=True)
def _one_thread():
    # The test machine is shared; one thread keeps timings predictable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _meta_backbone(name: str, **options) -> nn.Module:
    """The backbone with meta tensors: shapes and sizes without memory or compute."""
    with torch.device("meta"):
        return build_backbone(name, **options)


def _num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------- registry and errors


def test_registry_holds_every_backbone():
    assert sorted(BACKBONES) == sorted(ALL_BACKBONES)


def test_unknown_backbone_names_the_valid_ones():
    with pytest.raises(VtdlError, match="unknown backbone 'resnet50'") as info:
        build_backbone("resnet50")
    for name in ALL_BACKBONES:
        assert name in str(info.value)


def test_unknown_option_and_init_are_rejected():
    with pytest.raises(VtdlError, match="unknown option.*depth.*valid options: channels"):
        build_backbone("small3d", depth=3)
    with pytest.raises(VtdlError, match="unknown option.*width.*valid options: none"):
        build_backbone("r3d_18", width=2.0)
    with pytest.raises(VtdlError, match="unknown init 'kaiming'"):
        build_backbone("small3d", init="kaiming")


def test_small3d_rejects_mismatched_strides():
    with pytest.raises(VtdlError, match="small3d.*spatial_strides.*4 positive integers"):
        build_backbone("small3d", spatial_strides=(2, 2))
    with pytest.raises(VtdlError, match="small3d.*width"):
        build_backbone("small3d", width=0.0)


# ---------------------------------------------------------------- output shapes

# Expected (D, T', H', W'), worked out by hand per network:
# small3d: strides T 1-1-2-2 (/4), H 2-1-2-2 (/8).
# i3d: 'same' layers give ceil(n / stride): T /2 (stem), /2 (pool 4a), /2 (pool 5a);
#      H /2 (stem), /2, /2 (pools 2a, 3a), /2, /2 (pools 4a, 5a) -> /32.
# r3d_18 and r2plus1d_18: T /8 (layers 2-4), H /16 (stem, layers 2-4);
# mc3_18: T unchanged (layers 2-4 are 2D), H /16.
# c3d (conv5b): pools 1-4 give T /8 and H /16.
SHAPES = {
    (16, 112): {
        "small3d": (128, 4, 14, 14),
        "i3d": (1024, 2, 4, 4),
        "r3d_18": (512, 2, 7, 7),
        "r2plus1d_18": (512, 2, 7, 7),
        "mc3_18": (512, 16, 7, 7),
        "c3d": (512, 2, 7, 7),
    },
    (64, 224): {
        "small3d": (128, 16, 28, 28),
        "i3d": (1024, 8, 7, 7),
        "r3d_18": (512, 8, 14, 14),
        "r2plus1d_18": (512, 8, 14, 14),
        "mc3_18": (512, 64, 14, 14),
        "c3d": (512, 8, 14, 14),
    },
}


@pytest.mark.parametrize("size", list(SHAPES), ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_feature_map_shape_at_standard_sizes(name, size):
    frames, side = size
    backbone = _meta_backbone(name)
    out = backbone(torch.empty(2, 3, frames, side, side, device="meta"))
    assert backbone.feature_dim == FEATURE_DIM[name]
    assert tuple(out.shape) == (2, *SHAPES[size][name])


def test_small3d_runs_at_32_and_112():
    backbone = build_backbone("small3d").eval()
    with torch.no_grad():
        small = backbone(torch.randn(2, 3, 8, 32, 32))
        large = backbone(torch.randn(1, 3, 16, 112, 112))
    assert small.shape == (2, 128, 2, 4, 4)
    assert large.shape == (1, 128, 4, 14, 14)
    # The last layer is a ReLU: a feature map, not logits.
    assert small.min() >= 0 and large.min() >= 0


def test_same_padding_arithmetic():
    # (size, kernel, stride) -> (front, back); output = ceil(size / stride).
    assert same_padding(224, 7, 2) == (2, 3)  # (112 - 1) * 2 + 7 - 224 = 5
    assert same_padding(16, 7, 2) == (2, 3)  # (8 - 1) * 2 + 7 - 16 = 5
    assert same_padding(7, 2, 2) == (0, 1)  # (4 - 1) * 2 + 2 - 7 = 1
    assert same_padding(8, 2, 2) == (0, 0)
    assert same_padding(56, 3, 2) == (0, 1)  # (28 - 1) * 2 + 3 - 56 = 1
    assert same_padding(9, 3, 1) == (1, 1)
    assert same_padding(1, 3, 2) == (1, 1)  # one position still sees the whole kernel


def test_i3d_rounds_up_at_odd_sizes():
    # T 9 -> 5 -> 3 -> 2; H 40 -> 20 -> 10 -> 5 -> 3 -> 2; W 50 -> 25 -> 13 -> 7 -> 4 -> 2.
    out = _meta_backbone("i3d")(torch.empty(1, 3, 9, 40, 50, device="meta"))
    assert tuple(out.shape) == (1, 1024, 2, 2, 2)


def test_c3d_pool5_and_short_clips():
    with_pool5 = _meta_backbone("c3d", pool5=True)
    out = with_pool5(torch.empty(1, 3, 16, 112, 112, device="meta"))
    assert tuple(out.shape) == (1, 512, 1, 4, 4)  # the paper's pool5 map (fc6 input 8192)
    # 4 frames: pool4 and pool5 see a single frame and keep it (ceil mode) instead of failing.
    out = with_pool5(torch.empty(1, 3, 4, 32, 32, device="meta"))
    assert tuple(out.shape) == (1, 512, 1, 1, 1)


# ---------------------------------------------------------------- parameter counts


def _conv(c_in: int, c_out: int, kernel_volume: int) -> int:
    return c_in * c_out * kernel_volume


def _bn(channels: int) -> int:
    return 2 * channels  # weight and bias


def _small3d_params(channels: tuple[int, ...]) -> int:
    total, previous = 0, 3
    for c in channels:
        total += _conv(previous, c, 27) + _bn(c)  # 3x3x3 conv without bias
        previous = c
    return total


def _i3d_params() -> int:
    # Inception-v1 / I3D channel table (paper), typed in again here on purpose.
    modules = [
        (192, 64, 96, 128, 16, 32, 32),
        (256, 128, 128, 192, 32, 96, 64),
        (480, 192, 96, 208, 16, 48, 64),
        (512, 160, 112, 224, 24, 64, 64),
        (512, 128, 128, 256, 24, 64, 64),
        (512, 112, 144, 288, 32, 64, 64),
        (528, 256, 160, 320, 32, 128, 128),
        (832, 256, 160, 320, 32, 128, 128),
        (832, 384, 192, 384, 48, 128, 128),
    ]
    total = _conv(3, 64, 7**3) + _bn(64)  # Conv3d_1a_7x7
    total += _conv(64, 64, 1) + _bn(64)  # Conv3d_2b_1x1
    total += _conv(64, 192, 27) + _bn(192)  # Conv3d_2c_3x3
    for c_in, b0, b1r, b1, b2r, b2, b3 in modules:
        total += _conv(c_in, b0, 1) + _bn(b0)
        total += _conv(c_in, b1r, 1) + _bn(b1r) + _conv(b1r, b1, 27) + _bn(b1)
        total += _conv(c_in, b2r, 1) + _bn(b2r) + _conv(b2r, b2, 27) + _bn(b2)
        total += _conv(c_in, b3, 1) + _bn(b3)
    return total


def _c3d_params(batch_norm: bool) -> int:
    channels = [64, 128, 256, 256, 512, 512, 512, 512]
    total, previous = 0, 3
    for c in channels:
        total += _conv(previous, c, 27) + (_bn(c) if batch_norm else c)  # bn or conv bias
        previous = c
    return total


def _r3d_18_params() -> int:
    total = _conv(3, 64, 3 * 7 * 7) + _bn(64)  # stem
    blocks = [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256)]
    blocks += [(256, 512), (512, 512)]
    for c_in, c_out in blocks:
        total += _conv(c_in, c_out, 27) + _bn(c_out) + _conv(c_out, c_out, 27) + _bn(c_out)
        if c_in != c_out:  # strided block: 1x1x1 projection shortcut
            total += _conv(c_in, c_out, 1) + _bn(c_out)
    return total


# torchvision's documented sizes of the Kinetics-400 models include a 512 -> 400 fc layer.
KINETICS_FC = 512 * 400 + 400


def test_parameter_counts_match_the_architectures():
    assert _small3d_params((16, 32, 64, 128)) == 292_080
    expected = {
        "small3d": _small3d_params((16, 32, 64, 128)),
        "i3d": _i3d_params(),
        "c3d": _c3d_params(batch_norm=True),
        "r3d_18": _r3d_18_params(),
        "r2plus1d_18": 31_505_325 - KINETICS_FC,
        "mc3_18": 11_695_440 - KINETICS_FC,
    }
    assert expected["r3d_18"] == 33_371_472 - KINETICS_FC  # our arithmetic vs torchvision docs
    for name, count in expected.items():
        assert _num_params(_meta_backbone(name)) == count, name
    assert _num_params(_meta_backbone("c3d", batch_norm=False)) == _c3d_params(batch_norm=False)


def test_small3d_with_projection_head_matches_the_pilot_size():
    # The pilot's "309k parameters" is the encoder with its 128 -> 128 projection head.
    total = _num_params(_meta_backbone("small3d")) + _num_params(ProjectionHead(128, 128))
    assert total == 292_080 + 128 * 128 + 128
    assert round(total / 1000) == 309


def test_small3d_group_norm_is_per_clip_and_an_unknown_norm_is_refused():
    backbone = build_backbone("small3d", channels=[4, 8, 8, 16], norm="group").eval()
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in backbone.modules())
    clips = torch.randn(4, 3, 4, 16, 16)
    with torch.no_grad():  # per-clip statistics: a clip's features ignore the rest of the batch
        torch.testing.assert_close(backbone.train()(clips)[:2], backbone(clips[:2]))
    with pytest.raises(VtdlError, match="backbone 'small3d' option norm: 'batch' or 'group'"):
        build_backbone("small3d", norm="layer")


def test_small3d_width_and_channels_options():
    half = _meta_backbone("small3d", width=0.5)
    assert half.feature_dim == 64
    assert _num_params(half) == _small3d_params((8, 16, 32, 64))
    custom = _meta_backbone(
        "small3d", channels=[8, 24, 48], spatial_strides=[2, 2, 2], temporal_strides=[1, 2, 2]
    )
    assert custom.feature_dim == 48
    assert _num_params(custom) == _small3d_params((8, 24, 48))
    out = custom(torch.empty(1, 3, 8, 32, 32, device="meta"))
    assert tuple(out.shape) == (1, 48, 2, 4, 4)


# ---------------------------------------------------------------- initialisation


def _xavier_bound(conv: nn.Conv3d, gain: float) -> float:
    volume = math.prod(conv.kernel_size)
    fan_in, fan_out = conv.in_channels * volume, conv.out_channels * volume
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def test_original_init_statistics():
    torch.manual_seed(0)
    backbone = build_backbone("c3d")
    bn_weights = torch.cat([m.weight for m in backbone.modules() if isinstance(m, nn.BatchNorm3d)])
    assert bn_weights.numel() == 2752
    assert bn_weights.mean().item() == pytest.approx(1.0, abs=0.003)
    assert bn_weights.std().item() == pytest.approx(0.02, rel=0.1)
    for module in backbone.modules():
        if isinstance(module, nn.BatchNorm3d):
            assert torch.count_nonzero(module.bias) == 0
        if isinstance(module, nn.Conv3d):
            bound = _xavier_bound(module, math.sqrt(2.0))
            weights = module.weight.detach()
            # The bound is exact in float64; the float32 weights may round just above it.
            assert weights.abs().max().item() <= bound * (1 + 1e-6)
            # U(-b, b) has standard deviation b / sqrt(3).
            assert weights.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)


def test_default_init_is_left_alone_and_original_is_seeded():
    default = build_backbone("small3d", init="default")
    assert all(torch.all(m.weight == 1) for m in default.modules() if isinstance(m, nn.BatchNorm3d))
    first = init_original(default, generator=torch.Generator().manual_seed(3))
    weights = [p.clone() for p in first.parameters()]
    again = init_original(default, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(weights, again.parameters(), strict=True))


def test_original_init_leaves_linear_layers_alone():
    head = nn.Sequential(nn.Linear(64, 32), nn.Conv3d(4, 4, 1))
    torch.manual_seed(1)
    head[0].reset_parameters()
    linear_before = head[0].weight.clone()
    init_original(head)
    assert torch.equal(head[0].weight, linear_before)
    assert torch.count_nonzero(head[1].bias) == 0


# ---------------------------------------------------------------- heads


def test_projection_head_gives_unit_vectors():
    head = ProjectionHead(128, dim=16)
    out = head(torch.randn(3, 128, 2, 4, 4))
    assert out.shape == (3, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    # An already pooled (B, D) input gives the same embedding as its feature map.
    fmap = torch.randn(2, 128, 1, 3, 3)
    torch.testing.assert_close(head(fmap), head(fmap.mean(dim=(2, 3, 4))))


def test_linear_classifier_head():
    head = ClassifierHead(32, 5, dropout=0.5, kind="linear").eval()
    fmap = torch.randn(2, 32, 2, 3, 3)
    logits = head(fmap)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, head.fc(fmap.mean(dim=(2, 3, 4))))


def test_i3d_classifier_head_pools_space_then_averages_logits_over_time():
    head = ClassifierHead(32, 5, dropout=0.5, kind="i3d").eval()
    fmap = torch.randn(2, 32, 3, 4, 5)
    logits = head(fmap)
    weight = head.logits.weight.view(5, 32)
    per_step = torch.einsum("bct,kc->bkt", fmap.mean(dim=(3, 4)), weight)
    per_step = per_step + head.logits.bias.view(1, 5, 1)
    torch.testing.assert_close(logits, per_step.mean(dim=2))
    # Any spatial size works (224 inputs give 7x7, 112 give 4x4).
    assert head(torch.randn(1, 32, 8, 7, 7)).shape == (1, 5)


def test_dropout_acts_only_in_training():
    head = ClassifierHead(64, 3, dropout=0.5, kind="i3d")
    fmap = torch.randn(4, 64, 2, 2, 2)
    head.train()
    torch.manual_seed(0)
    assert not torch.allclose(head(fmap), head(fmap))
    head.eval()
    assert torch.equal(head(fmap), head(fmap))


def test_build_classifier_head_picks_the_kind_and_checks_input():
    assert build_classifier_head("i3d", 1024, 10).kind == "i3d"
    for name in ["small3d", "r3d_18", "r2plus1d_18", "mc3_18", "c3d"]:
        assert build_classifier_head(name, 512, 10, dropout=0.2).kind == "linear"
    with pytest.raises(VtdlError, match="unknown backbone 'vgg'.*small3d"):
        build_classifier_head("vgg", 512, 10)
    with pytest.raises(VtdlError, match="unknown kind"):
        ClassifierHead(512, 10, kind="mlp")
    with pytest.raises(VtdlError, match="dropout"):
        ClassifierHead(512, 10, dropout=1.0)
    with pytest.raises(VtdlError, match="num_classes"):
        ClassifierHead(512, 0)


def test_video_classifier_logits_and_pooled_features():
    backbone = build_backbone("small3d")
    model = BackboneWithHead(backbone, build_classifier_head("small3d", 128, 7)).eval()
    clips = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert model(clips).shape == (2, 7)
        features = model.features(clips)
        torch.testing.assert_close(features, backbone(clips).mean(dim=(2, 3, 4)))
    assert features.shape == (2, 128)


# ---------------------------------------------------------------- training


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    backbone = build_backbone("small3d")
    model = BackboneWithHead(backbone, build_classifier_head("small3d", 128, 4, dropout=0.0))
    projection = ProjectionHead(128, 16)
    clips = torch.randn(4, 3, 8, 32, 32)
    fmap = backbone(clips)
    embedding = projection(fmap)
    loss = F.cross_entropy(model.head(fmap), torch.tensor([0, 1, 2, 3]))
    loss = loss - (embedding[:2] * embedding[2:]).sum()
    loss.backward()
    named = list(model.named_parameters()) + list(projection.named_parameters())
    for name, parameter in named:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_one_sgd_step_changes_every_weight(name):
    torch.manual_seed(0)
    backbone = build_backbone(name)
    head = build_classifier_head(name, backbone.feature_dim, 3, dropout=0.0)
    model = BackboneWithHead(backbone, head)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    clips = torch.randn(2, 3, 8, 32, 32)
    fmap = backbone(clips)
    assert fmap.dim() == 5 and fmap.shape[:2] == (2, FEATURE_DIM[name])
    F.cross_entropy(head(fmap), torch.tensor([0, 2])).backward()
    optimizer.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == []


@pytest.mark.parametrize("name, side", [("small3d", 32), ("i3d", 16)])
def test_channels_last_and_bf16_autocast_on_cpu(name, side):
    # i3d covers the -inf 'same' padding of its max-pools and the branch concatenation.
    torch.manual_seed(0)
    backbone = build_backbone(name).to(memory_format=torch.channels_last_3d)
    head = ProjectionHead(backbone.feature_dim)
    clips = torch.randn(2, 3, 8, side, side).contiguous(memory_format=torch.channels_last_3d)
    # Eval mode: with 2 clips and a 1x1x1 map, train-mode batch norm turns every feature into
    # +-1, a sign that any rounding flips, so the two precisions could not be compared.
    backbone.eval()
    # Forward only under bf16: this CPU has no bf16 units, so the backward would be slow.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = head(backbone(clips))
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    embedding = head(backbone(clips))
    # bf16 keeps about 3 significant digits; the embedding must still point the same way.
    assert (low * embedding).sum(dim=1).min() > 0.99
    embedding.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in backbone.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_channels_last_and_autocast_on_gpu(name):
    backbone = build_backbone(name).cuda().to(memory_format=torch.channels_last_3d)
    head = build_classifier_head(name, backbone.feature_dim, 5).cuda()
    model = BackboneWithHead(backbone, head)
    clips = torch.randn(2, 3, 16, 112, 112, device="cuda")
    clips = clips.contiguous(memory_format=torch.channels_last_3d)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        logits = model(clips)
        features = model.features(clips)
    assert logits.shape == (2, 5) and features.dtype == torch.float32
    F.cross_entropy(logits.float(), torch.tensor([0, 4], device="cuda")).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
