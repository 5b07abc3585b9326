"""The one confusion-matrix renderer and the figure writer."""

from __future__ import annotations

import numpy as np
import pytest

from vtdl.figures import draw_confusion

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_png_is_written_atomically_and_reproducibly(tmp_path):
    first, second = tmp_path / "a" / "confusion.png", tmp_path / "b.png"
    draw_confusion(np.array([[3, 1], [0, 2]]), ["a", "b"], first, title="test")
    draw_confusion(np.array([[3, 1], [0, 2]]), ["a", "b"], second, title="test")
    assert first.read_bytes()[:8] == PNG
    assert first.read_bytes() == second.read_bytes()  # no timestamp or version in the file
    assert list(first.parent.iterdir()) == [first]  # no temporary file left behind


def test_confusion_without_names_is_labelled_by_index(tmp_path):
    draw_confusion([[1, 0, 0], [0, 0, 1], [0, 0, 0]], None, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == PNG


@pytest.mark.parametrize(
    ("matrix", "names"), [(np.zeros((2, 2)), ["a", "b", "c"]), (np.zeros((2, 3)), None)]
)
def test_a_matrix_that_does_not_fit_is_refused_and_nothing_is_written(tmp_path, matrix, names):
    with pytest.raises(ValueError):
        draw_confusion(matrix, names, tmp_path / "bad.png")
    assert list(tmp_path.iterdir()) == []
