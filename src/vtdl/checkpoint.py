"""Checkpoints that resume exactly and load with `weights_only=True`.

A checkpoint holds only tensors, numbers, strings, lists and dicts (no pickled objects), so it
loads with torch's safe unpickler. It records a digest of the parameters it was trained with:
a job re-started after a parameter change starts afresh instead of resuming the wrong run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from vtdl.errors import VtdlError
from vtdl.fsutil import atomic_path, write_failure


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_write_error(err: RuntimeError) -> bool:
    # torch's zip writer reports a failed write (disk full, file size limit) as a RuntimeError
    # from its C++ stream writer, without the OS error.
    text = str(err)
    return "inline_container" in text or "PytorchStreamWriter" in text or "write failed" in text


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write atomically: a job killed while saving keeps its previous checkpoint.

    Raises:
        VtdlError: the file could not be written (disk full, size limit, read-only folder);
            the message names it, and the previous checkpoint is kept.
    """
    with atomic_path(path) as tmp:
        try:
            torch.save(state, tmp)
        except RuntimeError as err:
            if not _is_write_error(err):
                raise
            raise write_failure(path, err) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise VtdlError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False: exactly what must not be done here.
        raise VtdlError(
            f"{path}: refused: it holds Python objects besides tensors (a pickle that could run "
            "code), so it was not loaded; move or delete the file to start afresh"
        ) from None
    except Exception as err:  # torch raises many types for a damaged or foreign file
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise VtdlError(
            f"{path}: not a readable vtdl checkpoint ({type(err).__name__}: {first}); move or "
            "delete the file to start afresh"
        ) from None


def load_resumable(path: str | os.PathLike, digest: str) -> dict | None:
    """The checkpoint at `path` if it was written with the same parameters, else None."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_checkpoint(path)
    return state if state.get("params_digest") == digest else None


# ----------------------------------------------------------------------------------------------
# The encoder file: what pretraining hands to every downstream stage
# ----------------------------------------------------------------------------------------------

ENCODER_FORMAT = "vtdl-encoder/1"


def save_encoder(
    path: str | os.PathLike,
    backbone_name: str,
    backbone_options: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    source: dict[str, Any],
) -> None:
    """Write a pretrained backbone (query encoder, projection head dropped) atomically.

    Args:
        backbone_name: a name of `vtdl.models.BACKBONES`.
        backbone_options: the constructor options it was built with.
        state_dict: the backbone's weights (CPU tensors).
        source: provenance: stage, method, dataset, seed, mlflow_run_id, params_digest.
    """
    save_checkpoint(
        path,
        {
            "format": ENCODER_FORMAT,
            "backbone": backbone_name,
            "backbone_options": dict(backbone_options),
            "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
            "source": dict(source),
        },
    )


def load_encoder(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the backbone saved by `save_encoder`; returns (backbone, the whole record).

    Raises:
        VtdlError: missing or foreign file, or weights that do not fit the named backbone.
    """
    from vtdl.models import build_backbone

    record = load_checkpoint(path)
    if not isinstance(record, dict) or record.get("format") != ENCODER_FORMAT:
        raise VtdlError(f"{path}: not a vtdl encoder file (expected format {ENCODER_FORMAT})")
    backbone = build_backbone(record["backbone"], **record["backbone_options"])
    try:
        backbone.load_state_dict(record["state_dict"])
    except RuntimeError as err:
        raise VtdlError(
            f"{path}: weights do not fit backbone {record['backbone']!r}: {err}"
        ) from None
    return backbone, record
