"""Every random stream of a run, derived from the job's seed in one way.

A stream is named by a key: the job's seed, then words that say what the stream is for and
where in the run it is (the tags below, epochs, steps, item indices). The key goes through
numpy's SeedSequence, which hashes the words together, so two different keys give unrelated
streams; a linear formula such as `seed * K + step` does not (seed 1 at step 0 is seed 0 at
step K). The words go in as SeedSequence's spawn key, not as more entropy: short entropy is
padded with zeros, so `[s, a]` and `[s, a, 0]` would name the same stream. Nothing derived
here needs saving in a checkpoint: a resumed run derives the same streams from the same keys.

This module imports torch only when a torch generator is asked for, so the stages that never
run torch (synth, extract, splits) stay light.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# What a stream is for: one word of its key, distinct from any epoch, step or index a run
# reaches, so tagged and untagged keys of the same seed never meet.
EPOCH_ORDER = 0x4F524452  # "ORDR": pretraining's order of the training list in one epoch
ITEM = 0x4954454D  # "ITEM": one training item's clips and augmentation in one epoch
TCA_STEP = 0x54434153  # "TCAS": Temporal Consistent Augmentation's draws in one step
QUEUE = 0x51554555  # "QUEU": the memory queue's initial keys
LABELLED = 0x4C41424C  # "LABL": which videos of a class are the labelled subset
FINETUNE_EPOCH = 0x46494E45  # "FINE": one fine-tuning epoch (order, clips, dropout)


def sequence(seed: int, *words: int) -> np.random.SeedSequence:
    """The SeedSequence of the key (seed, *words)."""
    return np.random.SeedSequence(int(seed), spawn_key=tuple(int(w) for w in words))


def numpy_rng(seed: int, *words: int) -> np.random.Generator:
    """A numpy generator for the key (seed, *words)."""
    return np.random.default_rng(sequence(seed, *words))


def derive(seed: int, *words: int) -> int:
    """A 32-bit seed for the key (seed, *words), to seed a library's own generator."""
    return int(sequence(seed, *words).generate_state(1)[0])


def torch_generator(seed: int, *words: int) -> torch.Generator:
    """A torch CPU generator for the key (seed, *words)."""
    import torch

    return torch.Generator().manual_seed(derive(seed, *words))


def seed_everything(seed: int) -> None:
    """Seed every global generator (Python, numpy, torch): what a model's initialisation
    draws from; on the CPU this makes a run bit-for-bit repeatable."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
