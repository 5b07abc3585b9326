"""Recipe search for the embedded default, on validation data only (never the test split).

One trial = one `vtdl pretrain` job (the real training loop, through its Python entry point)
with `params.yaml`'s `pretrain` section plus overrides, then a validation of its encoder on
the *training* lists of the downstream data sets, each cut into a labelled pool and a held-out
validation part:

- synth_ucf (the pretraining set): the training groups of split 1 are 8..25; groups 8..11
  are the validation part, the other groups the pool.
- synth_hmdb: 10 training videos per class (seeded) are the validation part.

From the pool, 10 videos per class train a linear probe (standardised mean features of 4
uniform clips, L-BFGS logistic regression, as `vtdl linear`); the whole pool is the
kNN gallery (R@1 of the validation videos, as `vtdl retrieval`). Results go to one JSON line
per trial in `--log` (default bench/recipe_search.jsonl); the README's recipe table is made
from those lines.

    .venv/bin/python bench/recipe_search.py --name base --method vtdl --seed 0 \
        --set epochs=40 --set lr=0.003
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vtdl.augment import ClipEval
from vtdl.checkpoint import load_encoder
from vtdl.config import load_settings
from vtdl.data.clips import ClipDataset, read_list
from vtdl.downstream.job import labelled_subset
from vtdl.downstream.linear import Standardiser, fit_linear
from vtdl.metrics import recall_at_k
from vtdl.models import global_average_pool

ROOT = Path(__file__).resolve().parent.parent
FRAMES = Path(os.environ.get("VTDL_RECIPE_FRAMES", ROOT / "data/frames"))  # frames root
UCF_GROUP = re.compile(r"_g(\d+)_c\d+")


def validation_parts(dataset: str) -> tuple[list[int], list[int], list]:
    """(pool indices, validation indices, entries) of `dataset`'s split-1 training list."""
    entries = read_list(ROOT / "data/splits" / dataset / "split1" / "train.csv")
    if dataset == "synth_ucf":
        groups = sorted({int(UCF_GROUP.search(e.path).group(1)) for e in entries})
        held = set(groups[:4])
        val = [i for i, e in enumerate(entries) if int(UCF_GROUP.search(e.path).group(1)) in held]
    else:
        val = labelled_subset([e.label for e in entries], 10, seed=12345)
    pool = sorted(set(range(len(entries))) - set(val))
    return pool, val, entries


@torch.no_grad()
def features(backbone: torch.nn.Module, dataset: str, settings: dict, clips: int) -> np.ndarray:
    """(V, D) mean feature of `clips` uniform centre-cropped clips per training video."""
    data = ClipDataset(
        ROOT / "data/splits" / dataset / "split1" / "train.csv",
        FRAMES / dataset,
        settings["clip_len"],
        settings["stride"],
        "uniform",
        num_clips=clips,
        transform=ClipEval(settings["crop_size"], settings["resize_short"]),
    )
    backbone.eval()
    out = []
    for start in range(0, len(data), 32):
        batch = torch.stack([data[i]["video"] for i in range(start, min(start + 32, len(data)))])
        b, n = batch.shape[:2]
        out.append(global_average_pool(backbone(batch.flatten(0, 1))).view(b, n, -1).mean(1))
    return torch.cat(out).double().numpy()


def validate(backbone: torch.nn.Module, settings: dict, seed: int) -> dict[str, float]:
    """Linear-probe top-1 and kNN R@1 on the validation parts of both data sets."""
    result = {}
    for dataset in ("synth_ucf", "synth_hmdb"):
        pool, val, entries = validation_parts(dataset)
        labels = np.array([e.label for e in entries])
        feats = features(backbone, dataset, settings, clips=4)
        train = [pool[i] for i in labelled_subset(labels[pool], 10, seed)]
        standardise = Standardiser(feats[train])
        weight, bias = fit_linear(standardise(feats[train]), labels[train], 10, 1e-3, 500)
        scores = standardise(feats[val]) @ weight + bias
        result[f"{dataset}/val_linear"] = float((scores.argmax(1) == labels[val]).mean())
        recall = recall_at_k(feats[val], labels[val], feats[pool], labels[pool], (1,))
        result[f"{dataset}/val_r1"] = float(recall[1])
    return result


def log_trial(log: str, row: dict) -> None:
    """Append the trial's row to the log (one JSON line) and show it."""
    with open(log, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")
    print(json.dumps(row, indent=1, sort_keys=True), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="trial name (a row of the log)")
    parser.add_argument("--method", default="vtdl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="pretrain KEY=JSON override")
    parser.add_argument("--log", default=str(ROOT / "bench/recipe_search.jsonl"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    settings = load_settings(str(ROOT / "params.yaml"), "pretrain")
    settings.update(overrides)
    settings = load_settings(json.dumps(settings), "pretrain")  # validated like a real job

    from vtdl.pretrain import pretrain

    if args.method == "scratch":  # the baseline: the seeded random initialisation
        from vtdl.models import build_backbone
        from vtdl.seeds import seed_everything

        seed_everything(args.seed)
        name = settings["backbones"][0]  # with its options, as the `scratch` row of a run
        backbone = build_backbone(name, **settings["backbone_options"].get(name, {}))
        row = {"name": args.name, "method": "scratch", "seed": args.seed, "overrides": overrides}
        row.update({k: round(v, 4) for k, v in validate(backbone, settings, args.seed).items()})
        log_trial(args.log, row)
        return
    with tempfile.TemporaryDirectory(prefix="vtdl-recipe-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        job = argparse.Namespace(
            method=args.method,
            backbone=settings["backbones"][0],
            seed=args.seed,
            dataset=settings["dataset"],
            lists=str(ROOT / "data/splits" / settings["dataset"]),
            frames=str(FRAMES / settings["dataset"]),
            out=tmp,
            threads=args.threads,
        )
        start = time.process_time()
        summary = pretrain(job, settings)
        cpu = time.process_time() - start
        backbone, _ = load_encoder(Path(tmp) / "encoder.pt")
    row = {
        "name": args.name,
        "method": args.method,
        "seed": args.seed,
        "overrides": overrides,
        "pretrain_cpu_s": round(cpu, 1),
        "pretext": {k.split("/")[-1]: round(v, 4) for k, v in summary["metrics"].items()},
        **{k: round(v, 4) for k, v in validate(backbone, settings, args.seed).items()},
    }
    log_trial(args.log, row)


if __name__ == "__main__":
    main()
