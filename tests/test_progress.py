"""Progress output: the start-up line a job prints at its first batch (README "budget")."""

from vtdl import progress


def test_the_first_batch_of_the_process_reports_its_start_up_cpu_once(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_started", False)
    assert list(progress.progress([1, 2], "videos", unit="video")) == [1, 2]
    assert "startup" not in capsys.readouterr().err  # only batches count
    assert list(progress.progress([3, 4], "train", unit="batch")) == [3, 4]
    assert list(progress.progress([5], "test", unit="batch")) == [5]
    err = capsys.readouterr().err
    assert err.count("vtdl: startup ") == 1 and "s CPU before the first batch" in err
