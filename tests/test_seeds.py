"""One seed-derivation scheme: keys name streams, different keys never share one."""

import subprocess
import sys

import numpy as np
import torch

from vtdl import seeds


def _first_draws(seed: int, *words: int) -> list[int]:
    return seeds.numpy_rng(seed, *words).integers(0, 2**62, 4).tolist()


def test_the_same_key_gives_the_same_stream_in_every_form():
    assert _first_draws(3, seeds.ITEM, 7, 11) == _first_draws(3, seeds.ITEM, 7, 11)
    a = seeds.torch_generator(3, seeds.TCA_STEP, 5)
    b = seeds.torch_generator(3, seeds.TCA_STEP, 5)
    assert torch.equal(torch.rand(8, generator=a), torch.rand(8, generator=b))
    assert seeds.derive(3, seeds.QUEUE) == seeds.derive(3, seeds.QUEUE)


def test_keys_that_a_linear_formula_or_zero_padding_would_merge_stay_apart():
    # seed*K + step: seed 1 at step 0 equals seed 0 at step K.
    assert seeds.derive(1, seeds.TCA_STEP, 0) != seeds.derive(0, seeds.TCA_STEP, 1_000_003)
    # SeedSequence pads short entropy with zeros: [s, a] and [s, a, 0] must still differ
    # (fine-tuning's order (seed, FINE, epoch) and rank 0's stream (seed, FINE, epoch, 0)).
    assert seeds.derive(5, seeds.FINETUNE_EPOCH, 2) != seeds.derive(5, seeds.FINETUNE_EPOCH, 2, 0)
    assert seeds.derive(5) != seeds.derive(5, 0)
    # Word order matters: (epoch, index) is not (index, epoch).
    assert _first_draws(0, seeds.ITEM, 1, 2) != _first_draws(0, seeds.ITEM, 2, 1)


def test_every_tag_names_its_own_stream():
    tags = [seeds.EPOCH_ORDER, seeds.ITEM, seeds.TCA_STEP, seeds.QUEUE, seeds.LABELLED]
    tags.append(seeds.FINETUNE_EPOCH)
    assert len(set(tags)) == len(tags)
    assert len({seeds.derive(0, tag, 0) for tag in tags}) == len(tags)


def test_seed_everything_makes_global_draws_repeatable():
    seeds.seed_everything(9)
    first = (np.random.rand(), torch.rand(3))
    seeds.seed_everything(9)
    again = (np.random.rand(), torch.rand(3))
    assert first[0] == again[0] and torch.equal(first[1], again[1])


def test_numpy_streams_do_not_import_torch():
    code = (
        "import sys; from vtdl import seeds; seeds.numpy_rng(0, seeds.ITEM, 1).random(); "
        "seeds.derive(0, 1); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
