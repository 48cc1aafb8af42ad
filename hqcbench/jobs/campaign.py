"""Campaigns: run what a committed spec asks for and the store lacks; survive kills; continue later.

``python -m hqcbench campaign reports/mnist/campaign.toml`` reads the spec (``jobs.campaign_spec``),
opens the store in the spec's folder (``mlflow.db`` + ``artifacts/``, relative artifact locations so
the folder works from any clone), and then:

1. finds child runs left RUNNING whose process is gone -- same host: no such pid, or the pid now
   belongs to a process started later; another host: no heartbeat for ``STALE_AFTER_S`` -- and
   marks them KILLED (they are redone); a live worker's run is never touched;
2. runs the studies of ``tuned`` blocks up to their budget (``jobs.campaign_tuning``), which turns
   each complete block into cells with every arm's best configuration;
3. trains every (block, dataset, protocol, arm, seed) whose training fingerprint has no FINISHED run
   (and no live one), one child run each, weights kept as artifacts;
4. evaluates every group (the arms of one seed) whose runs lack the current evaluation fingerprint,
   reloading weights where the model is not in memory.

``--only`` restricts it to a part (e.g. ``seed=0,1``), so a long campaign runs in parts, each part
committed; ``--dry-run`` lists what is missing with the time it should take, estimated from the
store's own seconds per epoch. One progress bar covers the whole campaign.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import mlflow
import pandas as pd
import torch
from tqdm.auto import tqdm

from hqcbench import arms as arm_registry
from hqcbench import names
from hqcbench.jobs import campaign_tuning
from hqcbench.jobs import store as campaign_store
from hqcbench.jobs.campaign_spec import (
    CampaignSpec,
    Training,
    Tuning,
    check_only,
    make_training,
    parse_spec,
    select,
    select_tunings,
)
from hqcbench.jobs.evaluate import TrainedArm, evaluate_group, evaluate_runs, missing_kinds, splits_for
from hqcbench.jobs.fingerprint import evaluation_kinds
from hqcbench.jobs.liveness import is_dead, reap
from hqcbench.jobs.run import machine_tags, resolve_device, train_arm
from hqcbench.report.build import write_report
from hqcbench.resources import ResourceMonitor, timing_lock
from hqcbench.threads import apply_threads
from hqcbench.tracking import runs as tracking
from hqcbench.training.recipes import protocol_tags

log = logging.getLogger(__name__)

FALLBACK_SAMPLES_PER_S = 4000.0  # estimate before the store holds any measured epoch (2-core CPU, MNIST)
FALLBACK_EVAL_S = 60.0  # per arm and seed, before the store holds any measured evaluation


@dataclass
class Plan:
    """What the store lacks for the selected part of a spec."""

    trainings: list[Training] = field(default_factory=list)
    evaluations: list[tuple[tuple, list[Training]]] = field(default_factory=list)  # (group, its trainings)
    running_elsewhere: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    tunings: list[Tuning] = field(default_factory=list)  # tuned blocks whose studies lack trials
    after_tuning: list[str] = field(default_factory=list)  # cells that exist once those studies are complete

    @property
    def empty(self) -> bool:
        return not self.trainings and not self.evaluations and not self.tunings


# ---------------------------------------------------------------------------------------------- planning
def plan(spec: CampaignSpec, runs: pd.DataFrame, only: str = "") -> Plan:
    """Missing trainings and evaluations of the selected part, given the store's child runs."""
    out = Plan()
    chosen = select(spec.trainings, only)
    children = runs[runs.get(f"tags.{names.TAG_KIND}", pd.Series(dtype=str)) == "child"] if len(runs) else runs
    fp_col = f"tags.{names.TAG_FINGERPRINT}"
    by_fp = {fp: group for fp, group in children.groupby(fp_col)} if fp_col in children else {}
    finished: dict[str, pd.Series] = {}
    for t in chosen:
        rows = by_fp.get(t.fingerprint)
        done = rows[rows.status == "FINISHED"] if rows is not None else None
        if done is not None and len(done):
            finished[t.fingerprint] = done.sort_values("start_time").iloc[-1]
        elif rows is not None and (rows.status == "RUNNING").any():
            out.running_elsewhere.append(t.label())
        else:
            out.trainings.append(t)
    groups: dict[tuple, list[Training]] = {}
    for t in chosen:
        groups.setdefault(t.group, []).append(t)
    for key, members in groups.items():
        if stale_kinds(members, runs) and not any(t.label() in out.running_elsewhere for t in members):
            out.evaluations.append((key, members))
    return out


def taken_by_another(experiment_id: str, t: Training) -> str | None:
    """Why ``t`` must not be trained now, read from the store at this moment (None: train it).

    A plan is made once, at the start; a campaign of hours shares its store with other workers (one
    per core), which may have finished or started the same training since. Only a check made under
    the store's lock, together with the claim (``claimed_run``), is safe against a worker checking in
    the same moment."""
    runs = campaign_store.child_runs(experiment_id)
    col = f"tags.{names.TAG_FINGERPRINT}"
    if col not in runs:
        return None
    rows = runs[runs[col] == t.fingerprint]
    if (rows.status == "FINISHED").any():
        return "finished by another worker"
    now = time.time()
    if any(not is_dead(row, now) for _, row in rows[rows.status == "RUNNING"].iterrows()):
        return "being trained by another live worker"
    return None


@contextlib.contextmanager
def claimed_run(store: campaign_store.Store, t: Training, tags: dict[str, str]) -> Iterator[str | None]:
    """Claim ``t`` for this worker: yields None with its child run active (opened by ``open_run``, so it
    ends FINISHED, KILLED or FAILED with the body), or the reason another worker has it, with no run.

    The check (finished, or RUNNING in a live process) and the claim (the RUNNING run with the
    fingerprint and this process's host and pid tags) happen under the store's lock, so workers on
    one store that check in the same moment see each other's claims: each cell is trained once. The
    lock is released as soon as the run exists; the training itself runs outside it.
    """
    with contextlib.ExitStack() as stack:
        with store.lock():
            taken = taken_by_another(store.experiment_id, t)
            if taken is None:
                stack.enter_context(tracking.open_run(run_name=names.child_run_name(t.arm, t.seed), nested=True,
                                                      tags=tags))
        yield taken


def stale_kinds(members: list[Training], runs: pd.DataFrame, fresh: Iterable[str] = ()) -> list[str]:
    """The evaluation kinds a group lacks: each kind its settings ask for whose fingerprint tag some member's
    latest FINISHED run does not carry (every kind for a member without one, or trained in this call, whose
    fingerprint is in ``fresh``). A spec that only adds or changes noise therefore re-runs the noise
    evaluation alone, not the attacks (noise is an evaluation kind of its own)."""
    skip = set(fresh)
    stored = finished_run_ids(runs, [m for m in members if m.fingerprint not in skip])
    if len(stored) < len(members):
        return evaluation_kinds(members[0].cfg)
    return missing_kinds(runs[runs.run_id.isin(list(stored.values()))], members[0].cfg)


def evaluated_elsewhere(members: list[Training], runs: pd.DataFrame) -> bool:
    """Every member's latest FINISHED run already carries the current evaluation tags (another worker
    sharing the store evaluated the group since this one planned)."""
    return not stale_kinds(members, runs)


def finished_run_ids(runs: pd.DataFrame, members: list[Training]) -> dict[str, str]:
    """fingerprint -> run id of its latest FINISHED child run."""
    out: dict[str, str] = {}
    col = f"tags.{names.TAG_FINGERPRINT}"
    if col not in runs:
        return out
    for t in members:
        rows = runs[(runs[col] == t.fingerprint) & (runs.status == "FINISHED")]
        if len(rows):
            out[t.fingerprint] = rows.sort_values("start_time").iloc[-1].run_id
    return out


# ---------------------------------------------------------------------------------------------- estimates
def estimate_seconds(runs: pd.DataFrame, t: Training, n_train: int) -> tuple[float, float]:
    """(seconds per epoch, seconds of evaluation) for ``t`` from the store's measurements."""
    rate = campaign_store.median_metric(runs, t, "samples_per_s")
    per_epoch = n_train / rate if rate else n_train / FALLBACK_SAMPLES_PER_S
    evaluation = campaign_store.median_metric(runs, t, "robustness_time_s") or FALLBACK_EVAL_S
    return per_epoch, evaluation


def evaluation_seconds(runs: pd.DataFrame, t: Training, kinds: Iterable[str]) -> float:
    """Seconds to evaluate ``t`` for ``kinds``, from the store's measurements: the attacks' time for
    robustness (readout comes with it), the noise evaluation's own time for noise (none without a circuit)."""
    seconds = 0.0
    if {"robustness", "readout"} & set(kinds):
        seconds += estimate_seconds(runs, t, 0)[1]
    if "noise" in kinds and arm_registry.get(t.arm).has_circuit:
        seconds += campaign_store.median_metric(runs, t, names.METRIC_NOISE_TIME_S) or FALLBACK_EVAL_S
    return seconds


def tuning_seconds(runs: pd.DataFrame, tuning: Tuning, arm: str, trials: int) -> float:
    """Trials of ``arm`` at the store's fair-protocol speed of that arm (pruned trials make it an overestimate)."""
    cell = make_training(tuning.block, tuning.settings, tuning.dataset, "fair", arm, tuning.seeds[0])
    per_epoch, _ = estimate_seconds(runs, cell, campaign_store.train_size(cell.cfg))
    return per_epoch * cell.cfg.epochs * trials


def describe(plan_: Plan, runs: pd.DataFrame, spec: CampaignSpec) -> tuple[list[str], float]:
    """Lines for --dry-run and the estimated seconds of the missing work."""
    lines, total = [], 0.0
    for tuning in plan_.tunings:
        for arm, trials in campaign_tuning.trials_left(tuning, spec).items():
            seconds = tuning_seconds(runs, tuning, arm, trials)
            total += seconds
            lines.append(f"tune     {tuning.label() + '/' + arm:48s} {trials:3d} trials  ~{seconds / 60:6.1f} min")
    for label in plan_.after_tuning:
        lines.append(f"train    {label:48s} after its block's studies")
    for t in plan_.trainings:
        per_epoch, evaluation = estimate_seconds(runs, t, campaign_store.train_size(t.cfg))
        seconds = per_epoch * t.cfg.epochs
        total += seconds
        lines.append(f"train    {t.label():48s} {t.cfg.epochs:3d} epochs  ~{seconds / 60:6.1f} min")
    for key, members in plan_.evaluations:
        kinds = stale_kinds(members, runs)
        seconds = sum(evaluation_seconds(runs, t, kinds) for t in members)
        total += seconds
        block, dataset, protocol, seed = key
        label = f"{block}/{dataset}/{protocol}/seed{seed} ({len(members)} arms: {'+'.join(kinds)})"
        lines.append(f"evaluate {label:48s} {'':10s}~{seconds / 60:6.1f} min")
    return lines, total


# ---------------------------------------------------------------------------------------------- execution
def training_tags(t: Training, spec: CampaignSpec, system: dict[str, str]) -> dict[str, str]:
    """The tags a training's child run opens with: what it is (fingerprint and its fields), where it
    belongs (campaign, block), the machine; ``open_run`` adds the process tags."""
    return {**names.child_tags(t.arm, t.cfg.protocol, t.cfg.dataset_name, t.seed), **protocol_tags(t.cfg), **system,
            names.TAG_FINGERPRINT: t.fingerprint, names.TAG_TRAINING_FIELDS: json.dumps(t.fields, sort_keys=True),
            names.TAG_CAMPAIGN: spec.name, names.TAG_BLOCK: t.block, **campaign_store.source_tags()}


def train_one(t: Training, splits, device: torch.device, monitor: ResourceMonitor, on_epoch) -> TrainedArm:
    """One training inside its claimed child run (``claimed_run``), a child of the active campaign run."""
    mlflow.log_params({k: str(v) for k, v in t.cfg.to_dict().items()})
    mlflow.log_params({"n_train": len(splits.train), "n_val": len(splits.val), "n_test": len(splits.test)})
    return train_arm(t.arm, t.seed, splits, t.cfg, device, monitor, progress=False, on_epoch=on_epoch)


def run_campaign(spec_path: str, only: str = "", dry_run: bool = False, device_choice: str = "auto",
                 progress: bool = True) -> Plan:
    """The ``campaign`` entry point; returns the plan it found (and, unless ``dry_run``, carried out)."""
    spec = parse_spec(spec_path)
    check_only(spec, only)  # before the store is opened: a typo in --only is the user's, not a plan
    store = campaign_store.open_store(spec.store, spec.name)
    with store.inside():
        runs = campaign_store.child_runs(store.experiment_id)
        killed = [] if dry_run else reap(runs)
        if killed:
            runs = campaign_store.child_runs(store.experiment_id)
        spec, tunings, waiting = campaign_tuning.resolve(spec)
        todo = plan(spec, runs, only)
        todo.killed = killed
        todo.tunings = select_tunings(tunings, only)
        todo.after_tuning = [label for label in waiting if any(label.startswith(t.label() + "/") for t in todo.tunings)]
        lines, seconds = describe(todo, runs, spec)
        for line in lines:
            print(line)
        for label in todo.running_elsewhere:
            print(f"running  {label} (a live process holds it: left alone)")
        if todo.empty:
            print("nothing missing")
            return todo
        tuned = f"the studies of {len(todo.tunings)} tuned block(s) (then {len(todo.after_tuning)} trainings), " \
            if todo.tunings else ""
        print(f"missing: {tuned}{len(todo.trainings)} trainings, {len(todo.evaluations)} evaluations, "
              f"about {seconds / 3600:.1f} h at the store's measured speed")
        if dry_run:
            return todo
        execute(spec, store, todo, runs, resolve_device(device_choice), seconds, progress, only)
        campaign_store.scrub_model_files(spec.store)
    return todo


def execute(spec: CampaignSpec, store: campaign_store.Store, todo: Plan, runs: pd.DataFrame, device: torch.device,
            seconds: float, progress: bool, only: str = "") -> None:
    apply_threads(spec.threads)  # 0: the CPUs available to the process, as for the main job
    system = machine_tags(device)
    bar = tqdm(total=max(1, int(seconds)), unit="s", desc=f"campaign {spec.name}", disable=not progress,
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} est. s [{elapsed}<{remaining}]")
    cache: dict = {}
    in_memory: dict[str, TrainedArm] = {}
    params = {"spec": campaign_store.relative(spec.path), "threads": spec.threads, "only": only}
    with timing_lock(), tracking.parent_run(params, f"campaign-{spec.name}", kind="campaign",
                                            tags=campaign_store.source_tags()), \
            ResourceMonitor(device, paper_metrics=any(t.cfg.protocol == "paper" for t in todo.trainings)) as monitor:
        mlflow.set_tags({**system, names.TAG_CAMPAIGN: spec.name})
        if todo.tunings:
            for tuning in todo.tunings:
                bar.set_postfix_str(f"tune {tuning.label()}")
                campaign_tuning.run_tuning(tuning, spec, device, monitor, system)
            spec, _, _ = campaign_tuning.resolve(spec)  # the complete blocks' cells now exist: plan them too
            runs = campaign_store.child_runs(store.experiment_id)
            more = plan(spec, runs, only)
            known = {t.fingerprint for t in todo.trainings}
            todo.trainings += [t for t in more.trainings if t.fingerprint not in known]
            todo.evaluations = list({**dict(todo.evaluations), **dict(more.evaluations)}.items())
        pending_groups = dict(todo.evaluations)
        for t in todo.trainings:
            per_epoch, _ = estimate_seconds(runs, t, campaign_store.train_size(t.cfg))
            splits = splits_for(t.cfg, t.seed, cache)
            bar.set_postfix_str(t.label())

            def on_epoch(epoch: int, _per_epoch: float = per_epoch) -> None:
                mlflow.set_tag(names.TAG_HEARTBEAT, f"{time.time():.0f}")
                bar.update(int(_per_epoch))

            with claimed_run(store, t, training_tags(t, spec, system)) as taken:
                if taken:
                    log.info("campaign: %s %s: skipped", t.label(), taken)
                    bar.update(int(per_epoch * t.cfg.epochs))
                    continue
                item = train_one(t, splits, device, monitor, on_epoch)
            in_memory[t.fingerprint] = item
            group = t.group
            if group in pending_groups and all(m.fingerprint in in_memory or m.fingerprint in
                                               finished_run_ids(runs, [m]) for m in pending_groups[group]):
                evaluate_pending(group, pending_groups.pop(group), runs, in_memory, device, cache, bar)
        for group, members in list(pending_groups.items()):
            current = campaign_store.child_runs(store.experiment_id)
            if evaluated_elsewhere(members, current):
                log.info("campaign: %s evaluated by another worker: skipped", "/".join(map(str, group)))
                continue
            evaluate_pending(group, members, current, in_memory, device, cache, bar)
    bar.close()


def evaluate_pending(group: tuple, members: list[Training], runs: pd.DataFrame, in_memory: dict[str, TrainedArm],
                     device: torch.device, cache: dict, bar) -> None:
    """Evaluate one group whose trainings have all finished (in this call or an earlier one)."""
    stored = finished_run_ids(runs, members)
    present = [m for m in members if m.fingerprint in in_memory or m.fingerprint in stored]
    if len(present) < len(members):
        log.info("campaign: %s not evaluated, %d of its %d trainings are missing", group, len(members) - len(present),
                 len(members))
        return
    bar.set_postfix_str(f"evaluate {'/'.join(map(str, group))}")
    t0 = time.perf_counter()
    settings = members[0].cfg
    kinds = stale_kinds(members, runs, fresh=in_memory)
    if all(m.fingerprint in in_memory for m in members):
        items = [in_memory[m.fingerprint] for m in members]
        cfg = settings.replace(arms=",".join(m.arm for m in members))
        evaluate_group(items, splits_for(cfg, members[0].seed, cache), cfg, device, kinds=kinds)
    else:
        evaluate_runs([in_memory[m.fingerprint].run_id if m.fingerprint in in_memory else stored[m.fingerprint]
                       for m in members], settings, device, cache, kinds=kinds)
    bar.update(int(time.perf_counter() - t0))


def write_campaign_report(spec_path: str) -> Path:
    """Build the report from the campaign's store into its folder (beside the spec); return report.md.

    Not logged as a run of the store (the folder holds the files), and run from inside the folder,
    so every path the report prints is relative to it.
    """
    spec = parse_spec(spec_path)
    store = campaign_store.open_store(spec.store, spec.name)
    command = f"python -m hqcbench campaign {campaign_store.relative(spec.path)} --report true"
    with store.inside():
        related = [r for r in spec.related if (Path(r) / "runs.csv").is_file()]
        missing = sorted(set(spec.related) - set(related))
        if missing:
            log.info("report: related folders without runs.csv yet (their rows stay empty): %s", ", ".join(missing))
        studies = Path(campaign_tuning.OPTUNA_FILE)
        report = write_report(spec.name, out=".", log_run=False, report_command=command,
                              note=spec.description, related=related or None,
                              studies_file=studies if studies.is_file() else None)
        return spec.store / report.files[0].name
