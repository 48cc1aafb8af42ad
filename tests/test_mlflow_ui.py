"""The MLflow UI as a user meets it: a finished digits run, served by ``mlflow server``, in headless chromium.

Why a browser: the README sends users to the UI to expand the parent run and read the arms side by
side. MLflow 3's UI is a JavaScript app that no other test renders, so only a real browser shows
that what hqcbench logs reads as intended there: the parent, one child per arm, each child's test
accuracy and the split it trained on. The page is driven the way a user does it (expand the parent,
pick the ``test_acc`` column in "Columns"), selecting elements by ARIA role and visible text rather
than by MLflow's generated CSS classes, so a restyled UI does not break the test but a changed
workflow does.

``HQCBENCH_UPDATE_DOCS_SCREENSHOT=1`` also refreshes ``docs/img/mlflow_ui_runs.png`` from the run.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.jobs.run import run_main
from tests.browser import Chromium, require_chromium, stop_process

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DOCS_SCREENSHOT = ROOT / "docs" / "img" / "mlflow_ui_runs.png"
EXPERIMENT = "hqcbench-digits"
ARMS = ("cnn", "hybrid", "control")
# the smallest job that still trains every arm: one seed, one epoch, 200 images, no attacks
TINY = dict(dataset="digits", arms=",".join(ARMS), seeds="0", epochs=1, train_limit=200, width=8,
            attacks="none")
# the docs copy shows what the default run gives: every training image, the default epochs and width
DOCS_RUN = dict(train_limit=0, epochs=RunConfig().epochs, width=RunConfig().width)
TRAIN_INPUT = "digits-train"  # the training split's mlflow.log_input name, shown in the Dataset column
METRIC = "test_acc"
HEADLINE = names.headline_metric(METRIC, "hybrid", "cnn")  # the parent row's answer: test_acc_hybrid_minus_cnn
SERVER_START_S = 240  # after training; `mlflow server` starts in ~10 s idle, minutes on a starved core
PAGE_LOAD_S = 90  # the first page load: ~10 s on an idle machine, 40 s seen on a loaded core


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.is_file() else "(no log)"


class Server:
    """A running ``mlflow server``; ``wait_healthy`` blocks until it answers /health."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.port, self.log = proc, port, log
        self.url = f"http://127.0.0.1:{port}"

    def wait_healthy(self, timeout_s: float = SERVER_START_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited with code {self.proc.returncode}:\n{_log_tail(self.log)}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"mlflow server did not answer /health within {timeout_s} s:\n{_log_tail(self.log)}")


@contextmanager
def mlflow_server(backend_uri: str, workdir: Path):
    """``mlflow server`` on a free local port over ``backend_uri``; stopped (its whole process group)
    however the test ends. It is started before training so its slow start overlaps the training."""
    port = _free_port()
    log = workdir / "mlflow-server.log"
    artifacts = workdir / "server-artifacts"
    # no job executor: the runs table needs none, and it would start seven more Python processes
    # (GenAI evaluation consumers) and leave their queue folder in /dev/shm behind
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, process_group=0)
    try:
        yield Server(proc, port, log)
    finally:
        stop_process(proc)


# ------------------------------------------------------------------------------------ page scripts
def _js(template: str, **values) -> str:
    """A JavaScript expression with Python values substituted as JSON literals."""
    for key, value in values.items():
        template = template.replace(f"${key}", json.dumps(value))
    return template


# every grid row whose Run Name link reads `name`: ag-grid splits one row into a pinned and a
# scrolled part that share the ARIA row index, so the row's text is gathered across both
ROW_TEXT = """(() => {
  const link = [...document.querySelectorAll('[role=row] a')].find(a => a.textContent.trim() === $name);
  if (!link) return null;
  const index = link.closest('[role=row]').getAttribute('aria-rowindex');
  return [...document.querySelectorAll('[role=row]')].filter(r => r.getAttribute('aria-rowindex') === index)
    .map(r => r.innerText).join('\\n');
})()"""
RUNS_SHOWN = """$names.every(n => [...document.querySelectorAll('[role=row] a')]
  .some(a => a.textContent.trim() === n))"""
# the parent's expander: the one button in the parent's Run Name cell (MLflow gives it no label)
EXPAND = """(() => {
  const link = [...document.querySelectorAll('[role=row] a')].find(a => a.textContent.trim() === $name);
  const button = link && link.closest('[role=gridcell]').querySelector('button');
  if (!button) return false;
  button.click();
  return true;
})()"""
CLICK_BUTTON = """(() => {
  const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === $text);
  if (!b) return false;
  b.click();
  return true;
})()"""
DIALOG_INPUT = """(() => {
  const input = document.querySelector('[role=dialog] input[type=text]');
  if (!input) return false;
  input.focus();
  return document.activeElement === input;
})()"""
# a leaf of the column tree (the search wraps the match in <strong>): its text exactly `text`
CLICK_IN_DIALOG = """(() => {
  const dialog = document.querySelector('[role=dialog]');
  const leaf = dialog && [...dialog.querySelectorAll('*')]
    .find(e => e.children.length === 0 && e.textContent.trim() === $text);
  if (!leaf) return false;
  leaf.click();
  return true;
})()"""
HEADER_SHOWN = """[...document.querySelectorAll('[role=columnheader]')].some(h => h.innerText.trim() === $text)"""
CLOSE_ASSISTANT = """[...document.querySelectorAll('button[aria-label=Close]')].map(b => (b.click(), 1)).length"""
TABLE_BOTTOM = """Math.max(...[...document.querySelectorAll('[role=row]')]
  .map(r => r.getBoundingClientRect().bottom))"""


def _numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+\.\d+", text)]


def _artifacts_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("HQCBENCH_TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _add_column(page, column: str) -> None:
    """Show one metric column the way a user does: Columns, type its name, pick it, close."""
    assert page.evaluate(_js(CLICK_BUTTON, text="Columns")), "no Columns button"
    page.wait_for(DIALOG_INPUT, 15, "the column search box")
    page.type_text(column)
    page.wait_for(_js(CLICK_IN_DIALOG, text=column), 15, f"{column} in the column picker")
    page.wait_for(_js(HEADER_SHOWN, text=column), 15, f"the {column} column")
    page.press("Escape", "Escape", 27)
    time.sleep(0.5)  # the popover closes before the next one opens


def test_runs_page_lists_the_arms_with_test_accuracy_and_dataset(mlflow_store, tmp_path, monkeypatch):
    browser_binary = require_chromium()
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    mlflow.MlflowClient().search_experiments()  # the store's tables exist before the server opens it
    artifacts = _artifacts_dir(tmp_path)
    update_docs = os.environ.get("HQCBENCH_UPDATE_DOCS_SCREENSHOT") == "1"
    with mlflow_server(mlflow_store, tmp_path) as server:
        trained = run_main(RunConfig(**{**TINY, **(DOCS_RUN if update_docs else {})}), progress=False)
        experiment = mlflow.get_experiment_by_name(EXPERIMENT)
        parent = mlflow.search_runs([experiment.experiment_id], output_format="list",
                                    filter_string=f"tags.`{names.TAG_KIND}` = 'main'")
        assert len(parent) == 1 and parent[0].info.status == "FINISHED"
        parent_name = parent[0].info.run_name
        accuracy = {names.child_run_name(t.arm, t.seed): t.metrics[METRIC] for t in trained}
        assert sorted(accuracy) == sorted(names.child_run_name(arm, 0) for arm in ARMS)
        server.wait_healthy()

        with Chromium(browser_binary, tmp_path / "chromium-profile") as page:
            try:
                page.navigate(f"{server.url}/#/experiments/{experiment.experiment_id}/runs")
                page.wait_for(_js(RUNS_SHOWN, names=[parent_name]), PAGE_LOAD_S, f"the parent run {parent_name}")
                page.evaluate(CLOSE_ASSISTANT)  # MLflow's chat panel opens beside the table; only cosmetic
                if not page.evaluate(_js(RUNS_SHOWN, names=list(accuracy))):
                    assert page.evaluate(_js(EXPAND, name=parent_name)), "no expander in the parent's row"
                page.wait_for(_js(RUNS_SHOWN, names=list(accuracy)), 30, "the child runs after expanding")

                for column in (METRIC, HEADLINE):
                    _add_column(page, column)
                page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
                time.sleep(1)  # the popover's closing animation, before the screenshot

                text = page.text()
                assert parent_name in text
                # the answer on the parent row, without expanding anything: hybrid - cnn of this run
                difference = accuracy[names.child_run_name("hybrid", 0)] - accuracy[names.child_run_name("cnn", 0)]
                parent_row = page.evaluate(_js(ROW_TEXT, name=parent_name))
                assert any(abs(abs(value) - abs(difference)) < 5e-4 for value in _numbers(parent_row)), \
                    f"{HEADLINE} {difference} not in the parent's row: {parent_row!r}"
                for child, acc in accuracy.items():
                    row = page.evaluate(_js(ROW_TEXT, name=child))
                    assert row, f"no row for {child}"
                    assert any(abs(value - acc) < 5e-4 for value in _numbers(row)), \
                        f"{child}: {METRIC} {acc} not in its row: {row!r}"
                    assert TRAIN_INPUT in row, f"{child}: dataset {TRAIN_INPUT} not in its row: {row!r}"
                page.screenshot(artifacts / "mlflow_ui_runs.png")
            except BaseException:
                try:  # what the page showed when it failed, for the CI artifacts
                    page.screenshot(artifacts / "mlflow_ui_runs_failure.png")
                except Exception:
                    pass
                raise
            if update_docs:  # the table only, not the empty page below it
                bottom = page.evaluate(TABLE_BOTTOM)
                height = min(page.window[1], int(bottom) + 60)
                page.screenshot(DOCS_SCREENSHOT, clip={"x": 0, "y": 0, "width": page.window[0], "height": height})
