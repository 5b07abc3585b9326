"""The MLflow UI as `make ui` serves it, driven in Debian's chromium over a real pipeline's store.

The store is clone A of the tiny project (tests/tiny_project.py: every stage ran). The test
installs chromium and chromium-driver when they are missing (skipped, with the reason, only
where apt cannot install them), starts `make ui` on a free port, opens the views a user looks
at first, saves a screenshot of each under the test's temporary folder, and checks the text
each page shows: not only that it loads.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from services import apt_install, free_port, wait_until_serving
from tiny_project import BIN, env

pytestmark = pytest.mark.slow

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def ui(tiny_project):
    """`make ui` over clone A's store on a free port: (the URL it prints, clone A)."""
    clone_a, port = tiny_project / "A", free_port()
    command = ["make", "-o", str(BIN.parent / ".installed"), f"VENV={BIN.parent}", "ui",
               f"PORT={port}"]  # fmt: skip
    server = subprocess.Popen(
        command, cwd=clone_a, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        printed = ""  # where to look: its first line (after make's own, under a parent make)
        for _ in range(20):
            printed = server.stdout.readline().decode()
            if printed.startswith("MLflow UI: ") or not printed:
                break
        assert printed.startswith("MLflow UI: "), printed
        wait_until_serving(f"{url}/health", server, "`make ui`", timeout=120)
        yield printed.split()[2], clone_a
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    present = Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()
    apt_install(["chromium", "chromium-driver"], present)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1600,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _runs(clone_a: Path):
    """Experiment id, the pretraining run and a fine-tuning run of clone A's store."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{clone_a / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vtdl")
    runs = client.search_runs([experiment.experiment_id])
    pretrain = next(
        r
        for r in runs
        if r.data.tags.get("stage") == "pretrain" and r.data.tags["method"] == "vtdl"
    )
    finetune = next(
        r for r in runs
        if r.data.tags.get("stage") == "finetune"
        and r.data.tags.get("mlflow.parentRunId") == pretrain.info.run_id
    )  # fmt: skip
    return experiment.experiment_id, pretrain, finetune


def _show(driver, url: str, expected: list[str], shot: Path, timeout: float = 90) -> str:
    """Open `url`, wait until the page shows every `expected` text, save a screenshot."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    deadline, text = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        text = driver.find_element(By.TAG_NAME, "body").text
        if all(item in text for item in expected):
            break
        time.sleep(0.5)
    driver.save_screenshot(str(shot))
    missing = [item for item in expected if item not in text]
    assert not missing, f"{url}: {missing} not shown; page text: {text[:2000]}"
    return text


def test_the_ui_shows_runs_curves_nesting_and_artifacts(ui, browser, tmp_path):
    printed, clone_a = ui
    experiment_id, pretrain, finetune = _runs(clone_a)
    pretrain_name, finetune_name = pretrain.info.run_name, finetune.info.run_name
    assert pretrain_name == "vtdl small3d s0" and finetune_name == "finetune synth_ucf/1"
    server = printed.split("/#/", 1)[0]
    base = f"{server}/#/experiments/{experiment_id}"
    assert printed == f"{base}?workflowType=machine_learning"

    # The printed URL opens the experiment on its training runs (not on GenAI traces), with
    # its description, the run tree and the data set of each run.
    text = _show(
        browser,
        printed,
        ["Runs", pretrain_name, "Dataset", "synth_ucf/split1/train", "self-supervised video"],
        tmp_path / "experiment.png",
    )
    assert "No data available" not in text and "Traces\n0" not in text
    # The pretraining run, and its loss curve among the model metrics.
    _show(browser, f"{base}/runs/{pretrain.info.run_id}", [pretrain_name, "pretrain"],
          tmp_path / "pretrain_run.png")  # fmt: skip
    _show(browser, f"{base}/runs/{pretrain.info.run_id}/model-metrics", ["pretrain/loss"],
          tmp_path / "pretrain_metrics.png")  # fmt: skip
    # A fine-tuning run, nested under its pretraining run (the page names its parent).
    _show(browser, f"{base}/runs/{finetune.info.run_id}",
          [finetune_name, "Parent run", pretrain_name], tmp_path / "finetune_run.png")  # fmt: skip
    # Its confusion matrix among the artifacts, opened.
    _show(browser, f"{base}/runs/{finetune.info.run_id}/artifacts/confusion_2clip.png",
          ["confusion_2clip.png", "classes.json", "Path: mlartifacts/"],
          tmp_path / "finetune_artifacts.png")  # fmt: skip
    shots = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(shots) == 5 and all((tmp_path / s).stat().st_size > 10_000 for s in shots)
