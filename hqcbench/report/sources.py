"""Source links: every number in the report points to the list of MLflow runs it was computed from.

Why a module of its own: traceability is the report's promise (a reader can open the exact runs
behind any cell in the MLflow UI), and the numbering of those lists must be shared by every table,
so one object hands out the numbers and writes the lists at the end. Runs read from another report's
runs.csv (``--related``) live in another store: they are listed by name and folder, without a link.
"""
from __future__ import annotations

import os
from typing import Iterable

import mlflow

from hqcbench.report.document import Anchor, Inline, Link
from hqcbench.report.formatting import NO_DATA_CELL, is_loopback, relative_path
from hqcbench.report.load import RunSet


class Sources:
    """Numbered lists of run ids; a number in the report links to its list, the list into the MLflow UI."""

    def __init__(self, runset: RunSet, ui_url: str = ""):
        # a loopback UI is the reader's own machine, not the one that holds the runs: never linked
        self.runset, self.ui_url = runset, "" if is_loopback(ui_url) else ui_url.rstrip("/")
        self.ids: dict[tuple[str, ...], str] = {}
        self.external: dict[str, str] = {}  # run id -> label, for runs of other reports (no UI link)

    def add_external(self, labels: dict[str, str]) -> None:
        """Runs from other reports' runs.csv: listed as text (they are not in this experiment)."""
        self.external.update(labels)

    def ref(self, run_ids: Iterable) -> str:
        """The anchor (s1, s2, ...) of a set of runs; the same set always gets the same anchor."""
        key = tuple(sorted(dict.fromkeys(str(r) for r in run_ids)))
        if key not in self.ids:
            self.ids[key] = f"s{len(self.ids) + 1}"
        return self.ids[key]

    def link(self, text: str, run_ids: Iterable) -> Inline:
        """``text`` linked to its runs' list; plain text when there are no runs or no data."""
        run_ids = list(run_ids)
        return Link(text, f"#{self.ref(run_ids)}") if run_ids and text != NO_DATA_CELL else text

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.runset.experiment_id}/runs/{run_id}"

    def run_ref(self, run_id: str, label: str = "") -> Inline:
        """A run as the reader finds it: linked into the UI where one was given, else its id as text."""
        text = f"{label} {run_id}".strip()
        return Link(text, self.run_url(run_id)) if self.ui_url else text

    def how_to_open(self, out_dir: str) -> str:
        """The one command that opens these runs in the MLflow UI, said once above the lists."""
        return (f"Each list names the MLflow runs one number was computed from (dataset/protocol/arm/seed and run "
                f"id). To open them: {ui_command(mlflow.get_tracking_uri(), out_dir)}, then open the experiment "
                f"{self.runset.experiment_name!r} and search `attributes.run_id = '<run id>'`.")

    def items(self) -> list[Inline]:
        """The Sources section: one anchored line per list, each run linked into the MLflow UI."""
        labels = {r.run_id: f"{r.dataset}/{r.protocol}/{r.arm}/seed {r.seed}" for r in self.runset.runs.itertuples()}
        out: list[Inline] = []
        for key, ref in self.ids.items():
            links: list[Inline] = []
            for k, rid in enumerate(key):
                links.append(", " if k else "")
                if rid in self.external:
                    links.append(f"{self.external[rid]} {rid}")  # whole id: it is looked up in that runs.csv
                else:
                    links.append(self.run_ref(rid, labels.get(rid, "")))
            out.append(Anchor(ref, [f"{ref}: ", *links]))
        return out


def ui_command(tracking_uri: str, out_dir: str) -> str:
    """`mlflow ui ...` for a local store (its path relative to the report folder, run there); for a tracking
    server, its UI (a loopback one named, not linked)."""
    for scheme in ("sqlite:///", "file://"):
        if tracking_uri.startswith(scheme):
            path = tracking_uri[len(scheme):]
            if os.path.isabs(path):
                path = relative_path(path, out_dir)
            return f"run `mlflow ui --backend-store-uri {scheme}{path}` in this report's folder"
    if os.path.isabs(tracking_uri) or "://" not in tracking_uri:
        path = relative_path(os.path.abspath(tracking_uri), out_dir)
        return f"run `mlflow ui --backend-store-uri {path}` in this report's folder"
    if is_loopback(tracking_uri):
        return "open the UI of the tracking server the runs were logged to (MLFLOW_TRACKING_URI where they ran)"
    return f"open {tracking_uri} (the tracking server's UI)"
