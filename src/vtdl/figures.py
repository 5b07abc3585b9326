"""Drawing, kept apart from the numbers: matplotlib set-up, saving, the confusion matrix, the
retrieval contact sheet and the class montage.

The downstream jobs draw their confusion matrix with `draw_confusion` (an MLflow artifact) and
the report redraws it with the same function from the stored counts when a run has no image,
so a figure looks the same wherever it comes from. matplotlib is imported on first use (Agg
backend, no display) so importing this module costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vtdl.fsutil import atomic_path

# Class names are printed in the cells only while they stay legible.
_MAX_ANNOTATED_CLASSES = 30


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    # Text is data here (class names, data set names), never a formula: a class named
    # `cost $x^$` must be printed as written, not fail to parse as mathtext.
    matplotlib.rcParams["text.parse_math"] = False
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write `fig` as a PNG atomically, byte-identical for identical figures; close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(
                tmp, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None}
            )
    finally:
        pyplot().close(fig)


def draw_confusion(
    matrix: np.ndarray,
    class_names: Sequence[str] | None,
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """A confusion matrix (rows = true class) as a PNG: cells coloured by the row fraction on
    a fixed [0, 1] scale (so runs compare by eye) and labelled with it.

    `class_names` None labels the classes by index.

    Raises:
        ValueError: the matrix is not square or does not fit the class names.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(matrix)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix must be square, got shape {matrix.shape}")
    names = [str(i) for i in range(n)] if class_names is None else list(class_names)
    if len(names) != n:
        raise ValueError(f"matrix shape {matrix.shape} does not fit {len(names)} class names")
    support = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)
    size = max(4.0, 0.45 * n + 2.0)
    fig, ax = pyplot().subplots(figsize=(size, size * 0.9))
    image = ax.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels=names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=9)
    if n <= _MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if fractions[i, j] > 0.5 else "black"
                ax.text(j, i, f"{fractions[i, j]:.2f}", ha="center", va="center",
                        fontsize=6, color=colour)  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    save(fig, path, dpi=100)


def draw_contact_sheet(
    rows: Sequence[tuple[np.ndarray, str, Sequence[tuple[np.ndarray, str, bool]]]],
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Retrieval results as frame strips: per row a query, then its neighbours nearest first,
    each framed green when it shares the query's class and red when it does not.

    rows: (query strip, query class, [(neighbour strip, neighbour class, correct), ...]); a
    strip is an (H, W, 3) uint8 image (frames side by side).
    """
    if not rows:
        raise ValueError("a contact sheet needs at least one query")
    columns = 1 + max(len(neighbours) for _, _, neighbours in rows)
    height, width = rows[0][0].shape[:2]
    cell = 1.9 * width / max(height, 1) / 4  # inches per cell: about 1.9 per 4 square frames
    fig, axes = pyplot().subplots(
        len(rows), columns, figsize=(columns * cell, len(rows) * 0.75 + 0.5), squeeze=False
    )
    for r, (query, query_class, neighbours) in enumerate(rows):
        cells = [(query, f"query: {query_class}", None), *neighbours]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cells):
                ax.axis("off")
                continue
            strip, name, correct = cells[c]
            ax.imshow(strip, interpolation="nearest")
            colour = "black" if correct is None else ("tab:green" if correct else "tab:red")
            mark = "" if correct is None else (" ✓" if correct else " ✗")
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(1.0 if correct is None else 2.5)
            ax.set_title(f"{name}{mark}", fontsize=6, color=colour, pad=2)
    if title:
        fig.suptitle(title, fontsize=9)
    save(fig, path, dpi=110)


def draw_montage(
    strips: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, title: str = ""
) -> None:
    """One frame strip per class (class name on the left): what each class looks like."""
    if not strips:
        raise ValueError("a montage needs at least one class")
    height, width = strips[0][1].shape[:2]
    fig, axes = pyplot().subplots(
        len(strips), 1, figsize=(1.2 * width / max(height, 1), 0.7 * len(strips) + 0.5),
        squeeze=False,
    )  # fmt: skip
    for (name, strip), (ax,) in zip(strips, axes, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    save(fig, path, dpi=110)
