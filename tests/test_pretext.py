"""TemporalMoCo: queue, momentum encoder, gradient flow, checkpoints, and that it learns."""

import copy
import statistics

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vtdl.errors import VtdlError
from vtdl.pretext import METHODS, TemporalMoCo, method_spec, validate_queue_size

torch.set_num_threads(1)


class TinyBackbone(nn.Module):
    """Conv3d -> BN -> ReLU -> Dropout: the smallest backbone with the layers that matter."""

    feature_dim = 16

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, self.feature_dim, 3, padding=1, stride=(1, 2, 2))
        self.bn = nn.BatchNorm3d(self.feature_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, clips):
        return self.drop(F.relu(self.bn(self.conv(clips))))


def _model(seed=0, **kwargs) -> TemporalMoCo:
    torch.manual_seed(seed)
    kwargs = {"dim": 8, "queue_size": 6, "momentum": 0.9, **kwargs}
    return TemporalMoCo(TinyBackbone(), generator=torch.Generator().manual_seed(seed), **kwargs)


def _perturb_query_encoder(model: TemporalMoCo) -> None:
    """Move the query encoder away from the key encoder, as an optimizer step would."""
    with torch.no_grad():
        for param in model.encoder_q.parameters():
            param.add_(torch.randn_like(param))


def _triplet(batch=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 3, 4, 8, 8, generator=gen) for _ in range(3))


# ---------------------------------------------------------------- methods and validation


def test_methods_describe_negative_and_tca():
    assert not METHODS["moco"].temporal_negative and not METHODS["moco"].tca
    assert METHODS["moco_td"].temporal_negative and not METHODS["moco_td"].tca
    assert METHODS["vtdl"].temporal_negative and METHODS["vtdl"].tca
    assert method_spec("vtdl") is METHODS["vtdl"]
    with pytest.raises(VtdlError, match=r"pretrain\.method: unknown method 'simclr'.*moco_td"):
        method_spec("simclr")


def test_validate_queue_size_names_the_key_and_the_numbers():
    validate_queue_size(5000, num_train_videos=9537, batch_size=8)  # the original UCF101 setting
    # The original HMDB51 setting counts a video as its own negative: 3569 >= 3570 - 16.
    with pytest.raises(VtdlError) as error:
        validate_queue_size(3569, num_train_videos=3570, batch_size=16)
    message = str(error.value)
    assert message.startswith("pretrain.queue_size: 3569 ")
    assert "3570 - 16 = 3554" in message
    with pytest.raises(VtdlError, match=r"^experiments\.small\.queue_size: "):
        validate_queue_size(100, 100, 4, key="experiments.small.queue_size")
    with pytest.raises(VtdlError, match="at least 1"):
        validate_queue_size(0, 100, 4)
    validate_queue_size(95, 100, 4)  # the largest valid queue
    with pytest.raises(VtdlError):
        validate_queue_size(96, 100, 4)


# ---------------------------------------------------------------- forward


@pytest.mark.parametrize("use_negative", [True, False])
def test_forward_logits_and_metrics(use_negative):
    model = _model(use_negative=use_negative, queue_size=6)
    anchor, positive, negative = _triplet(batch=4)

    out = model(anchor, positive, negative if use_negative else None)

    assert out["logits"].shape == (4, 1 + 6 + int(use_negative))
    assert out["loss"].dim() == 0 and out["loss"].requires_grad
    expected = {"loss", "pos_sim", "queue_sim", "instance_acc"}
    if use_negative:
        expected |= {"neg_sim", "pos_beats_neg", "triplet"}
    assert set(out["metrics"]) == expected
    assert out["metrics"]["loss"].item() == pytest.approx(out["loss"].item())


def test_forward_rejects_a_negative_that_does_not_match_the_method():
    anchor, positive, negative = _triplet()
    with pytest.raises(ValueError, match="requires a negative"):
        _model(use_negative=True)(anchor, positive)
    with pytest.raises(ValueError, match="takes no negative"):
        _model(use_negative=False)(anchor, positive, negative)


def test_triplet_weight_adds_the_logged_triplet_loss():
    anchor, positive, negative = _triplet()
    plain = _model(triplet_weight=0.0)(anchor, positive, negative)
    weighted = _model(triplet_weight=0.5)(anchor, positive, negative)
    info_nce = plain["loss"].item()
    triplet = plain["metrics"]["triplet"].item()
    assert weighted["loss"].item() == pytest.approx(info_nce + 0.5 * triplet, rel=1e-5)


# ---------------------------------------------------------------- queue


def test_queue_starts_as_unit_vectors_and_is_seeded():
    a, b = _model(seed=3), _model(seed=3)
    assert torch.equal(a.queue, b.queue)
    torch.testing.assert_close(a.queue.norm(dim=1), torch.ones(6))
    assert a.queue_ptr.item() == 0


def test_queue_is_fifo_and_wraps_when_its_size_is_not_a_multiple_of_the_batch():
    model = _model(queue_size=5, dim=2)
    batches = [torch.tensor([[b * 10.0 + i, 0.0] for i in range(2)]) for b in range(3)]

    for batch in batches:
        model._dequeue_and_enqueue(batch)

    # Rows 0-1 <- batch 0, rows 2-3 <- batch 1, rows 4 and 0 <- batch 2 (wrapped).
    assert model.queue[:, 0].tolist() == [21.0, 1.0, 10.0, 11.0, 20.0]
    assert model.queue_ptr.item() == 1
    # Read from the pointer, the queue lists the last 5 keys oldest first.
    oldest_first = model.queue.roll(-model.queue_ptr.item(), dims=0)[:, 0].tolist()
    assert oldest_first == [1.0, 10.0, 11.0, 20.0, 21.0]


def test_a_batch_larger_than_the_queue_keeps_its_newest_keys_in_order():
    model = _model(queue_size=5, dim=2)
    model._dequeue_and_enqueue(torch.tensor([[-1.0, 0.0]]))  # pointer now 1
    keys = torch.tensor([[float(i), 0.0] for i in range(7)])

    model._dequeue_and_enqueue(keys)

    assert model.queue_ptr.item() == (1 + 7) % 5
    oldest_first = model.queue.roll(-model.queue_ptr.item(), dims=0)[:, 0].tolist()
    assert oldest_first == [2.0, 3.0, 4.0, 5.0, 6.0]


def test_forward_enqueues_the_keys_of_the_positives_after_using_the_old_queue():
    model = _model(queue_size=6)
    _perturb_query_encoder(model)  # so that the EMA step visibly changes the key encoder
    anchor, positive, negative = _triplet(batch=4)
    model(anchor, positive, negative)  # pointer now 4: the next batch wraps around
    _perturb_query_encoder(model)
    before = model.queue.clone()

    out = model(anchor, positive, negative)

    with torch.no_grad():
        # The EMA step comes before k, and nothing touches the key encoder after it, so this
        # reproduces k exactly.
        keys = model.encoder_k(positive)
        q = model.encoder_q(anchor)
    rows = [4, 5, 0, 1]
    torch.testing.assert_close(model.queue[rows], keys)
    torch.testing.assert_close(model.queue[[2, 3]], before[[2, 3]])
    assert model.queue_ptr.item() == 2
    # The logits were taken against the queue as it was before this batch's keys went in.
    torch.testing.assert_close(out["logits"][:, 1:7], q @ before.t() / model.tau)


# ---------------------------------------------------------------- key encoder


def test_key_encoder_starts_as_a_copy_and_follows_the_ema():
    model = _model(momentum=0.9)
    for k_param, q_param in zip(
        model.encoder_k.parameters(), model.encoder_q.parameters(), strict=True
    ):
        assert torch.equal(k_param, q_param)
    _perturb_query_encoder(model)
    old_keys = [p.clone() for p in model.encoder_k.parameters()]
    queries = [p.clone() for p in model.encoder_q.parameters()]

    model(*_triplet())

    for new, old, query in zip(model.encoder_k.parameters(), old_keys, queries, strict=True):
        # Exact up to float32 rounding (the fused multiply-add may round differently).
        torch.testing.assert_close(new, 0.9 * old + 0.1 * query, rtol=0, atol=1e-6)
        assert not torch.equal(new, old)


def test_momentum_zero_copies_and_momentum_one_freezes():
    copying, frozen = _model(momentum=0.0), _model(momentum=1.0)
    for model in (copying, frozen):
        _perturb_query_encoder(model)
    frozen_before = [p.clone() for p in frozen.encoder_k.parameters()]

    copying(*_triplet())
    frozen(*_triplet())

    for k_param, q_param in zip(
        copying.encoder_k.parameters(), copying.encoder_q.parameters(), strict=True
    ):
        assert torch.equal(k_param, q_param)
    for k_param, before in zip(frozen.encoder_k.parameters(), frozen_before, strict=True):
        assert torch.equal(k_param, before)


def test_no_gradient_reaches_the_key_encoder_while_the_negative_branch_learns():
    model = _model()
    anchor, positive, negative = (x.requires_grad_() for x in _triplet())

    model(anchor, positive, negative)["loss"].backward()

    assert all(not p.requires_grad and p.grad is None for p in model.encoder_k.parameters())
    assert positive.grad is None
    assert negative.grad is not None and negative.grad.abs().sum() > 0
    assert anchor.grad is not None and anchor.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.encoder_q.parameters()}


def test_training_mode_runs_key_batch_norm_on_batch_statistics_without_dropout():
    torch.manual_seed(0)
    model = TemporalMoCo(TinyBackbone(dropout=0.5), dim=8, queue_size=6)

    model.train()
    assert model.encoder_q.backbone.drop.training and model.encoder_q.backbone.bn.training
    assert model.encoder_k.backbone.bn.training
    assert not model.encoder_k.backbone.drop.training

    model.eval()
    assert not any(m.training for m in model.modules())


def test_evaluation_pass_leaves_queue_and_key_encoder_untouched():
    model = _model()
    _perturb_query_encoder(model)
    state = {name: t.clone() for name, t in model.state_dict().items()}
    model.eval()

    with torch.no_grad():
        model(*_triplet())

    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_backbone_property_is_the_query_backbone():
    model = _model()
    assert model.backbone is model.encoder_q.backbone
    assert model.backbone is not model.encoder_k.backbone


# ---------------------------------------------------------------- checkpoints


def _train_steps(model, steps, seed):
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9
    )
    outs = []
    for step in range(steps):
        out = model(*_triplet(seed=seed + step))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        outs.append(out)
    return outs


def test_state_dict_round_trip_resumes_exactly(tmp_path):
    trained = _model(seed=0, queue_size=6)
    _train_steps(trained, steps=3, seed=0)
    torch.save(trained.state_dict(), tmp_path / "pretext.pt")
    assert {"queue", "queue_ptr"} <= set(trained.state_dict())

    resumed = _model(seed=1, queue_size=6)  # different random init, overwritten by the load
    resumed.load_state_dict(torch.load(tmp_path / "pretext.pt", weights_only=True))

    expected, actual = trained.state_dict(), resumed.state_dict()
    assert list(expected) == list(actual)
    for name, tensor in expected.items():
        assert torch.equal(tensor, actual[name]), name
    assert resumed.queue_ptr.item() == trained.queue_ptr.item() == (3 * 4) % 6
    # The next step is the same on both (the optimizer state is the training loop's to save).
    batch = _triplet(seed=99)
    out_trained, out_resumed = trained(*batch), resumed(*batch)
    assert torch.equal(out_trained["logits"], out_resumed["logits"])
    assert torch.equal(trained.queue, resumed.queue)


# ---------------------------------------------------------------- precision and devices


def test_forward_under_bf16_autocast_keeps_float32_logits_and_queue():
    model = _model()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(*_triplet())
    out["loss"].backward()
    assert out["logits"].dtype == torch.float32
    assert model.queue.dtype == torch.float32
    assert torch.isfinite(out["loss"])
    torch.testing.assert_close(model.queue.norm(dim=1), torch.ones(6))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_step_on_cuda_under_autocast(dtype):
    model = _model().cuda()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    for step in range(3):
        batch = [x.cuda() for x in _triplet(seed=step)]
        with torch.autocast("cuda", dtype=dtype):
            out = model(*batch)
        optimizer.zero_grad()
        scaler.scale(out["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
    assert out["logits"].dtype == torch.float32 and out["logits"].is_cuda
    assert model.queue.dtype == torch.float32 and model.queue_ptr.item() == (3 * 4) % 6
    assert torch.isfinite(out["loss"])


# ---------------------------------------------------------------- learning


def _synthetic_videos(gen, num_videos=32, frames=24, size=8):
    """Videos whose colour drifts over time, so two times of one video look different."""
    t = torch.linspace(0, 1, frames).view(1, 1, frames, 1, 1)
    base = torch.rand(num_videos, 3, 1, 1, 1, generator=gen)
    drift = torch.randn(num_videos, 3, 1, 1, 1, generator=gen)
    texture = 0.3 * torch.rand(num_videos, 3, 1, size, size, generator=gen)
    return base + drift * t + texture


@pytest.mark.parametrize("use_negative", [True, False])
def test_pretext_loss_falls_on_a_tiny_synthetic_set(use_negative):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    videos = _synthetic_videos(gen)
    batch, queue_size = 8, 16
    validate_queue_size(queue_size, num_train_videos=len(videos), batch_size=batch)
    model = TemporalMoCo(
        TinyBackbone(),
        dim=16,
        queue_size=queue_size,
        momentum=0.99,
        tau=0.2,
        use_negative=use_negative,
        generator=gen,
    )
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9
    )

    def jitter(clip):  # the "spatial augmentation": independent pixel noise
        return clip + 0.1 * torch.randn(clip.shape, generator=gen)

    losses = []
    for _ in range(60):
        clips = videos[torch.randperm(len(videos), generator=gen)[:batch]]
        anchor = clips[:, :, 0:4]
        negative = jitter(clips[:, :, 12:16]) if use_negative else None
        out = model(jitter(anchor), jitter(anchor), negative)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())

    # Steps 0-1 still see random initial queue rows (easy negatives); from step 2 on the queue
    # holds real keys, so compare the first 5 steps after that with the last 5.
    first, last = statistics.mean(losses[2:7]), statistics.mean(losses[-5:])
    assert last < first - 0.3, (first, last)


# ---------------------------------------------------------------- shuffle-BN in one process


def test_bn_splits_normalise_each_group_alone_and_shuffle_the_keys():
    """With bn_splits = 2 the anchors are encoded in two groups of consecutive clips, the keys
    in two groups of a random order (then put back in order), so a key's batch-norm statistics
    are not its query's."""
    model = _model(bn_splits=2)
    anchor, positive, _ = _triplet(batch=6)
    model.train()
    with torch.no_grad():
        torch.manual_seed(7)
        k = model._key_embeddings(positive)
        torch.manual_seed(7)
        order = torch.randperm(6)
        groups = [model.encoder_k(positive[order[:3]]), model.encoder_k(positive[order[3:]])]
        expected = torch.empty_like(k)
        expected[order] = torch.cat(groups)
        assert torch.allclose(k, expected, atol=1e-6)
        whole = model.encoder_k(positive)
        assert not torch.allclose(k, whole, atol=1e-4)  # the grouping changes the statistics
        q = model._grouped(model.encoder_q, anchor)
        halves = torch.cat([model.encoder_q(anchor[:3]), model.encoder_q(anchor[3:])])
        assert torch.allclose(q, halves, atol=1e-6)
    model.eval()  # evaluation ignores the grouping: one pass, running statistics
    with torch.no_grad():
        assert torch.allclose(model._key_embeddings(positive), model.encoder_k(positive))
    with pytest.raises(ValueError, match="bn_splits"):
        _model(bn_splits=0)


class NormFreeBackbone(nn.Module):
    """Conv3d -> ReLU: no batch norm, so a micro-batch computes what the whole batch does."""

    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, self.feature_dim, 3, padding=1, stride=(1, 2, 2))

    def forward(self, clips):
        return F.relu(self.conv(clips))


@pytest.mark.parametrize("use_negative", [False, True])
def test_two_accumulated_micro_batches_equal_one_batch_of_twice_the_size(use_negative):
    """2 x 16 with accumulation = 1 x 32: one EMA step and one enqueue per optimizer step."""
    torch.manual_seed(0)
    whole = TemporalMoCo(
        NormFreeBackbone(),
        dim=8,
        queue_size=40,
        momentum=0.5,
        use_negative=use_negative,
        generator=torch.Generator().manual_seed(0),
    )
    accumulated = copy.deepcopy(whole)
    optimizers = [torch.optim.SGD(m.encoder_q.parameters(), lr=0.5) for m in (whole, accumulated)]
    for step in range(3):  # the EMA after the first step is not a no-op any more
        anchor, positive, negative = _triplet(batch=32, seed=step)
        negative = negative if use_negative else None
        out = whole(anchor, positive, negative)
        out["loss"].backward()
        losses = []
        for half in (slice(0, 16), slice(16, 32)):
            micro = accumulated(
                anchor[half],
                positive[half],
                negative[half] if use_negative else None,
                last_micro_batch=half.start == 16,
            )
            (micro["loss"] / 2).backward()
            losses.append(micro["loss"].detach())
        torch.testing.assert_close(torch.stack(losses).mean(), out["loss"].detach())
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad()
        pairs = zip(whole.state_dict().items(), accumulated.state_dict().values(), strict=True)
        for (name, a), b in pairs:
            torch.testing.assert_close(a, b, msg=f"step {step}: {name}")
    assert int(accumulated.queue_ptr) == 3 * 32 % 40


def test_micro_batches_without_the_last_flag_do_not_touch_the_queue():
    model = _model(use_negative=False, queue_size=12)
    model.train()
    before = model.queue.clone()
    anchor, positive, _ = _triplet(batch=4)
    model(anchor, positive, last_micro_batch=False)
    torch.testing.assert_close(model.queue, before)
    model(anchor, positive, last_micro_batch=True)
    assert int(model.queue_ptr) == 8  # both micro-batches' keys, enqueued together
