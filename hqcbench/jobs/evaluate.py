"""Evaluate trained models and log the results into their child runs: now, or later from the store.

The main job calls ``evaluate_group`` right after training a seed's arms. A campaign (or a user who
adds an attack to finished work) calls ``evaluate_runs``: it rebuilds each model from its logged
weights (``jobs.checkpoints``) and adds the evaluation to the existing child run, so a new attack
never requires retraining. Each evaluation kind records the fingerprint of the settings it ran
with (tag ``hqcbench.evaluation.<kind>``), which is how a campaign knows what is missing.

The worst-case evaluation (``autoattack``, ``bpda``, ``pgd_convergence`` in ``attacks``) runs inside
``robustness.run_all`` like every other attack; since the robustness fingerprint covers ``attacks``,
adding one to finished work makes only that evaluation missing, and it runs from the logged weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import mlflow
import pandas as pd
import torch

from hqcbench import names
from hqcbench.config import RunConfig
from hqcbench.data.datasets import Splits, load_splits
from hqcbench.errors import UserInputError
from hqcbench.evaluation import hardware_cost, robustness, shots_sweep
from hqcbench.evaluation import noise as noise_evaluation
from hqcbench.jobs.campaign_spec import only_terms
from hqcbench.jobs.checkpoints import load_weights
from hqcbench.jobs.fingerprint import EVALUATION_FIELDS, evaluation_fingerprint, evaluation_kinds
from hqcbench.models.blocks import Classifier
from hqcbench.models.noise_spec import parse_noise, parse_sweep
from hqcbench.tracking import runs as tracking
from hqcbench.tracking.findings import Findings
from hqcbench.training.recipes import effective_val_fraction


@dataclass
class TrainedArm:
    """A trained model and the child run it belongs to."""

    arm: str
    seed: int
    run_id: str
    model: Classifier
    metrics: dict[str, float] = field(default_factory=dict)


def evaluation_tags(cfg: RunConfig) -> dict[str, str]:
    """``hqcbench.evaluation.<kind>`` -> fingerprint, for every evaluation kind ``evaluate_group`` runs (an
    optional kind such as noise only when asked for: runs evaluated before it existed stay complete)."""
    return {names.evaluation_tag(kind): evaluation_fingerprint(kind, cfg) for kind in evaluation_kinds(cfg)}


def evaluate_group(items: list[TrainedArm], splits: Splits, cfg: RunConfig, device: torch.device,
                   progress: bool = False, kinds: Iterable[str] | None = None) -> None:
    """Attacks (with transfer between the arms of one seed), finite-shot readout, noise and hardware cost of
    ``items`` (the arms of one seed), logged back into each arm's child run with the evaluation tags.
    ``progress``: a bar per model over its attack stages. ``kinds``: only these evaluation kinds (default:
    every kind ``cfg`` asks for); robustness and readout run together, since the hardware bill counts the
    attacks' circuit queries, so only noise can run alone (noise added to finished work)."""
    wanted = evaluation_tags(cfg)
    chosen = set(evaluation_kinds(cfg) if kinds is None else kinds) & set(evaluation_kinds(cfg))
    findings: dict[str, Findings] = {}
    extras = []
    if chosen & {"robustness", "readout"}:
        chosen |= {"robustness", "readout"}
        with hardware_cost.count_queries(item.model for item in items):  # attack circuit queries
            findings = robustness.run_all(items, splits, cfg, device, progress)
        extras += [shots_sweep.run_all(items, splits, cfg, device), hardware_cost.run_all(items, splits, cfg, device)]
    if "noise" in chosen:
        extras.append(noise_evaluation.run_all(items, splits, cfg, device))
    for extra in extras:
        for arm, result in extra.items():
            findings[arm] = findings[arm].merge(result) if arm in findings else result
    done = {names.evaluation_tag(kind): wanted[names.evaluation_tag(kind)] for kind in chosen}
    for item in items:
        with tracking.open_run(run_id=item.run_id, nested=True):  # FINISHED already: it stays FINISHED
            found = findings.get(item.arm)
            if found is not None:
                found.log()
                item.metrics.update(found.metrics)
            mlflow.set_tags(done)


def splits_for(cfg: RunConfig, seed: int, cache: dict | None = None) -> Splits:
    """The exact splits a run of ``cfg`` with ``seed`` trained and was tested on."""
    return load_splits(cfg.dataset, cfg.data_dir or None, seed, effective_val_fraction(cfg), cfg.train_limit,
                       test_as_val=(cfg.protocol == "paper" and cfg.dataset == "stl10"), cache=cache,
                       image_size=cfg.image_size)


def reload(run_ids: Iterable[str], device: torch.device) -> list[tuple[TrainedArm, RunConfig]]:
    """Rebuild the models of finished child runs from their logged weights."""
    out = []
    for run_id in run_ids:
        model, cfg, build = load_weights(run_id, device)
        out.append((TrainedArm(build["arm"], int(build["seed"]), run_id, model), cfg))
    return out


def evaluate_runs(run_ids: list[str], settings: RunConfig, device: torch.device, cache: dict | None = None,
                  kinds: Iterable[str] | None = None) -> None:
    """Evaluate finished child runs of one (dataset, protocol, seed) with ``settings``' evaluation
    fields (attacks, eps, shots sweep, noise, ...); training fields come from each run's own weights.
    ``kinds``: only these evaluation kinds (see ``evaluate_group``)."""
    loaded = reload(run_ids, device)
    if not loaded:
        return
    seeds = {item.seed for item, _ in loaded}
    if len(seeds) != 1:
        raise ValueError(f"evaluate_runs: one seed per group, got {sorted(seeds)}")
    base = loaded[0][1]
    fields = {name: getattr(settings, name) for kind in EVALUATION_FIELDS for name in EVALUATION_FIELDS[kind]
              if name != "shots"}  # the readout the model trained with stays
    cfg = base.replace(**fields, arms=",".join(item.arm for item, _ in loaded))
    if settings.data_dir:
        cfg = cfg.replace(data_dir=settings.data_dir)
    evaluate_group([item for item, _ in loaded], splits_for(cfg, seeds.pop(), cache), cfg, device, kinds=kinds)


def evaluate_experiment(experiment: str, settings: RunConfig, missing_only: bool = True, only: str = "") -> int:
    """``python -m hqcbench evaluate``: evaluate the finished child runs of ``experiment`` (in the
    active tracking store) with ``settings``' evaluation fields; returns the number of groups evaluated.

    Runs are grouped as they were trained together: same dataset, protocol and seed, and the same
    campaign block (or the same parent run), so transfer attacks pair the arms of one seed. ``only``: the
    campaign's ``--only`` terms over the runs' tags (block, dataset, protocol, arm, seed), e.g. noise on a
    store's paper and fair blocks alone; an arm term evaluates those arms only (transfer among them).
    """
    terms = only_terms(only)  # a bad term: one line before any work
    parse_noise(settings.noise), parse_sweep(settings.noise_sweep)  # bad syntax: one line before any work
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise UserInputError("experiment", f"no MLflow experiment named {experiment!r}", "an existing experiment")
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.`{names.TAG_KIND}` = 'child' and "
                              "attributes.status = 'FINISHED'", output_format="pandas", max_results=50_000)
    runs = _only(runs, terms)
    if not len(runs):
        return 0
    block = runs.get(f"tags.{names.TAG_BLOCK}", pd.Series(index=runs.index, dtype=object))
    parent = runs.get("tags.mlflow.parentRunId", pd.Series(index=runs.index, dtype=object))
    runs = runs.assign(_group=block.fillna(parent).fillna(""))
    device = torch.device("cuda" if settings.device == "cuda" else "cpu")
    cache: dict = {}
    done = 0
    keys = [f"tags.{names.TAG_DATASET}", f"tags.{names.TAG_PROTOCOL}", f"tags.{names.TAG_SEED}", "_group"]
    for _, group in runs.groupby(keys, dropna=False):
        missing = _missing_kinds(group, settings)
        if missing_only and not missing:
            continue
        evaluate_runs(list(group.run_id), settings, device, cache, kinds=missing if missing_only else None)
        done += 1
    return done


ONLY_TAGS = {"block": names.TAG_BLOCK, "dataset": names.TAG_DATASET, "protocol": names.TAG_PROTOCOL,
             "arm": names.TAG_ARM, "seed": names.TAG_SEED}


def _only(runs: pd.DataFrame, terms: list[tuple[str, set[str]]]) -> pd.DataFrame:
    """The runs whose tags match every ``--only`` term; a term matching no run is an error listing what the
    experiment has (a filter that matches nothing would read as "nothing to do")."""
    for key, wanted in terms:
        column = runs.get(f"tags.{ONLY_TAGS[key]}", pd.Series(index=runs.index, dtype=object)).astype(str)
        values = column.map(lambda v: str(int(v)) if key == "seed" and v.lstrip("-").isdigit() else v)
        if not values.isin(wanted).any():
            have = sorted(set(values) - {"nan", "None"})
            raise UserInputError("only", f"{key} {sorted(wanted)[0]!r} matches no finished child run",
                                 f"{key}={','.join(have) or '(none)'}")
        runs = runs[values.isin(wanted)]
    return runs


def _evaluated(group: pd.DataFrame, settings: RunConfig, kind: str = "robustness") -> bool:
    """Every run of ``group`` carries the ``kind`` fingerprint ``settings`` would give it."""
    wanted = evaluation_fingerprint(kind, settings)
    column = f"tags.{names.evaluation_tag(kind)}"
    return column in group and bool((group[column] == wanted).all())


def missing_kinds(group: pd.DataFrame, settings: RunConfig, kinds: Iterable[str] | None = None) -> list[str]:
    """The evaluation kinds among ``kinds`` (default: every kind ``settings`` asks for) that some run of
    ``group`` (search_runs rows) lacks under ``settings``: the one rule of "what is missing" for ``evaluate``
    and for campaigns."""
    asked = evaluation_kinds(settings)
    return [kind for kind in (asked if kinds is None else kinds)
            if kind in asked and not _evaluated(group, settings, kind)]


def _missing_kinds(group: pd.DataFrame, settings: RunConfig) -> list[str]:
    """What ``evaluate`` runs for ``group``: robustness (which brings readout along, whose shots stay each run's
    own, so readout's own fingerprint is not asked for) and noise when ``settings`` asks for it."""
    return missing_kinds(group, settings, ("robustness", "noise"))
