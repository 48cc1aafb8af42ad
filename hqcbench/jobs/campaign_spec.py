"""Campaign specs: a committed TOML file that says which trainings and evaluations a report needs.

A spec is a list of blocks, each a cross product datasets x protocols x arms x seeds with the
RunConfig fields it sets (epochs, patience, attacks, ...); later arms, protocols or sweeps are one
more block. Example (``reports/mnist/campaign.toml``)::

    name = "mnist"        # MLflow experiment; the store is the spec's folder
    threads = 2           # torch threads for every training, pinned so timings compare

    [defaults]            # RunConfig fields shared by every block
    attack_samples = "500"

    [[blocks]]
    name = "paper"
    datasets = ["mnist"]
    protocols = ["paper"]
    arms = ["cnn", "hybrid", "control"]
    seeds = [0, 1, 2, 3, 4]
    epochs = 50
    attacks = "fgsm,pgd,pgd_paper"

A block of the ``tuned`` protocol adds a ``[blocks.tune]`` table (``n_trials`` per arm and, optionally,
the search ranges of ``python -m hqcbench tune``); its cells exist once its studies are complete
(``jobs.campaign_tuning``)::

    [[blocks]]
    name = "tuned"
    datasets = ["digits"]
    protocols = ["tuned"]
    arms = ["cnn", "hybrid", "control"]
    seeds = [0, 1, 2, 3, 4]
    [blocks.tune]
    n_trials = 30

User arms (``module:callable``, ``twin:module:callable``; docs/byo.md) are arms like any other; their
modules are imported when the spec is read, before the campaign changes into the spec's folder, and their
factories' hyperparameters are a table per arm::

    [[blocks]]
    name = "mine"
    arms = ["cnn", "my_models:tiny_qnn", "twin:my_models:tiny_qnn"]
    ...
    [blocks.arm_params."my_models:tiny_qnn"]
    layers = 2

Every cell is validated as a RunConfig when the spec is read, so a typo fails before any compute.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hqcbench.arms import ArmError
from hqcbench.config import (
    FIELD_DEFAULTS,
    FIELD_META,
    FIELD_TYPES,
    TUNE_META,
    TUNE_SHARED,
    TUNE_TYPES,
    RunConfig,
    TuneConfig,
    arm_params_for,
    convert,
)
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fingerprint
from hqcbench.models.memory import check_memory

CROSS_KEYS = ("datasets", "protocols", "arms", "seeds")
TOP_KEYS = ("name", "threads", "description", "related", "defaults", "blocks")
PER_CELL = ("dataset", "protocol", "arms", "seeds")  # set by the cross product, not by a block
MACHINE_FIELDS = ("data_dir", "device", "threads")  # where a campaign runs, not what it computes
# [blocks.tune]: the study budget and search ranges; the rest of the tune job's fields come from the block
TUNE_KEYS = tuple(name for name in TUNE_META if name not in TUNE_SHARED
                  and name not in ("storage", "study_name", "timeout", "retrain"))
SPEC_ALLOWED = (f"top level: {', '.join(TOP_KEYS)}; a block: name, {', '.join(CROSS_KEYS)}, RunConfig fields and, "
                f"for protocols = [\"tuned\"], a tune table ({', '.join(TUNE_KEYS)})")


@dataclass(frozen=True)
class Training:
    """One (block, dataset, protocol, arm, seed) cell: what to train and how to recognise it in the store."""

    block: str
    arm: str
    seed: int
    cfg: RunConfig  # arms = arm, seeds = seed
    fingerprint: str
    fields: dict[str, Any]

    @property
    def group(self) -> tuple[str, str, str, int]:
        """Trainings evaluated together: attacks transfer between the arms of one seed."""
        return (self.block, self.cfg.dataset, self.cfg.protocol, self.seed)

    def label(self) -> str:
        return f"{self.block}/{self.cfg.dataset}/{self.cfg.protocol}/{self.arm}/seed{self.seed}"


@dataclass(frozen=True)
class Tuning:
    """The studies behind one tuned block and dataset: one per arm, ``n_trials`` each, equal for all arms."""

    block: str
    dataset: str
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    settings: dict[str, Any]  # the block's RunConfig fields (defaults merged), as for its cells
    search: dict[str, Any]  # the [blocks.tune] table: n_trials and search ranges

    @property
    def n_trials(self) -> int:
        return int(self.search["n_trials"])

    def label(self) -> str:
        return f"{self.block}/{self.dataset}"

    def tune_config(self, storage: str, campaign: str) -> TuneConfig:
        """The tune job's configuration: trials train with the fair recipe on the first seed."""
        shared = {k: v for k, v in self.settings.items() if k in TUNE_SHARED and k not in ("attacks", "seeds")}
        epochs = self.settings.get("epochs", FIELD_DEFAULTS["epochs"])  # trials train as long as the cells
        return TuneConfig(**{**shared, **self.search, "epochs": epochs, "dataset": self.dataset, "protocol": "fair",
                             "arms": ",".join(self.arms), "seeds": ",".join(map(str, self.seeds)),
                             "storage": storage, "study_name": f"{campaign}-{self.block}-{self.dataset}",
                             "attacks": "none", "retrain": "never"}).validate()


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    path: Path
    threads: int
    trainings: tuple[Training, ...]
    description: str = ""
    related: tuple[str, ...] = ()  # other report folders (relative to this one) for cross-dataset rows
    tunings: tuple[Tuning, ...] = ()  # the tuned blocks' studies; their cells join ``trainings`` once complete

    @property
    def store(self) -> Path:
        """The folder holding the campaign's MLflow store (the spec's own folder)."""
        return self.path.parent


def _fail(key: str, message: str) -> UserInputError:
    return UserInputError(f"spec {key}", message, SPEC_ALLOWED)


def _list(block: dict[str, Any], key: str, where: str) -> list[Any]:
    value = block.get(key)
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _fail(f"{where}.{key}", f"needs a non-empty list, got {value!r}")
    return value


def _fields(table: dict[str, Any], where: str) -> dict[str, Any]:
    """RunConfig fields of a block or of [defaults], converted to each field's type."""
    out = {}
    for key, raw in table.items():
        if key in PER_CELL:
            raise _fail(f"{where}.{key}", f"set {key!r} with the block's list "
                                          f"{CROSS_KEYS[PER_CELL.index(key)]!r}")
        if key not in FIELD_TYPES:
            raise _fail(f"{where}.{key}", "unknown key")
        if key in MACHINE_FIELDS:
            raise _fail(f"{where}.{key}", "belongs to the machine, not the spec: pass --data_dir or set "
                                          "HQCBENCH_DATA_DIR (and --device) when running the campaign")
        if key == "arm_params" and isinstance(raw, dict):  # a TOML table per user arm: [blocks.arm_params."m:f"]
            raw = json.dumps(raw, sort_keys=True)
        value = ",".join(map(str, raw)) if isinstance(raw, list) else raw
        out[key] = convert(key, value, FIELD_TYPES[key], FIELD_META[key]["allowed"])
    return out


def make_training(block: str, settings: dict[str, Any], dataset: str, protocol: str, arm: str, seed: int) -> Training:
    """One validated cell and its fingerprint (``arm_params`` cut to the cell's arm)."""
    settings = dict(settings)
    if settings.get("arm_params"):
        try:
            settings["arm_params"] = arm_params_for(settings["arm_params"], str(arm))
        except (ValueError, ArmError) as exc:
            raise UserInputError("arm_params", f"{block}: {exc}", FIELD_META["arm_params"]["allowed"]) from None
    cfg = RunConfig(**{**settings, "dataset": str(dataset), "protocol": str(protocol), "arms": str(arm),
                       "seeds": str(seed)}).validate()
    check_memory(cfg)  # a spec whose circuit cannot fit here is refused up front, cell by cell
    fingerprint, fields = training_fingerprint(cfg, str(arm), int(seed))
    return Training(block, str(arm), int(seed), cfg, fingerprint, fields)


def _tune_table(block: dict[str, Any], where: str, protocols: list[Any]) -> dict[str, Any] | None:
    """The [blocks.tune] table converted to TuneConfig's types; required exactly for tuned blocks."""
    table = block.get("tune")
    tuned = "tuned" in protocols
    if table is None:
        if tuned:
            raise _fail(f"{where}.tune", "a tuned block needs a tune table with n_trials (the budget of every arm)")
        return None
    if not tuned or len(protocols) > 1:
        raise _fail(f"{where}.tune", "belongs to a block whose protocols are exactly [\"tuned\"]")
    if not isinstance(table, dict) or "n_trials" not in table:
        raise _fail(f"{where}.tune", "needs n_trials (the budget of every arm)")
    out = {}
    for key, raw in table.items():
        if key not in TUNE_KEYS:
            raise _fail(f"{where}.tune.{key}", f"unknown key; allowed: {', '.join(TUNE_KEYS)}")
        value = ",".join(map(str, raw)) if isinstance(raw, list) else raw
        out[key] = convert(key, value, TUNE_TYPES[key], TUNE_META[key]["allowed"])
    return out


def parse_spec(path: str | Path) -> CampaignSpec:
    """Read and validate a spec; raise UserInputError naming the first bad key."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError("spec", f"no such file: {str(path)!r}", "a campaign TOML file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError("spec", f"{path.name} is not valid TOML: {exc}", "a campaign TOML file") from None
    for key in raw:
        if key not in TOP_KEYS:
            raise _fail(key, "unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail("name", "needs a non-empty string (the MLflow experiment)")
    threads = raw.get("threads", 0)
    if not isinstance(threads, int) or threads < 0:
        raise _fail("threads", f"needs an integer >= 0, got {threads!r}")
    defaults = _fields(raw.get("defaults", {}), "defaults")
    blocks = raw.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        raise _fail("blocks", "needs at least one [[blocks]] table")
    trainings: list[Training] = []
    tunings: list[Tuning] = []
    seen: dict[str, str] = {}
    for index, block in enumerate(blocks):
        bname = block.get("name") or f"block{index + 1}"
        where = f"blocks.{bname}"
        settings = {**defaults, **_fields({k: v for k, v in block.items() if k not in ("name", "tune", *CROSS_KEYS)},
                                          where)}
        if threads:
            settings["threads"] = threads
        search = _tune_table(block, where, _list(block, "protocols", where))
        if search is not None:
            for dataset in _list(block, "datasets", where):
                tuning = Tuning(bname, str(dataset), tuple(map(str, _list(block, "arms", where))),
                                tuple(int(s) for s in _list(block, "seeds", where)), settings, search)
                try:
                    tuning.tune_config("sqlite:///optuna.db", name.strip())  # validates ranges and the memory check
                except UserInputError as exc:
                    raise _fail(f"{where}.tune", str(exc)) from None
                for seed in tuning.seeds:  # the cells themselves, with the study's defaults: a typo fails now
                    for arm in tuning.arms:
                        make_training(bname, settings, str(dataset), "tuned", arm, seed)
                tunings.append(tuning)
            continue
        for dataset in _list(block, "datasets", where):  # seed before arm: each seed's group completes early
            for protocol in _list(block, "protocols", where):
                for seed in _list(block, "seeds", where):
                    for arm in _list(block, "arms", where):
                        cell = make_training(bname, settings, dataset, protocol, arm, seed)
                        if cell.fingerprint in seen:
                            raise _fail(where, f"{cell.label()} trains the same model as {seen[cell.fingerprint]}")
                        seen[cell.fingerprint] = cell.label()
                        trainings.append(cell)
    related = raw.get("related", [])
    if not isinstance(related, list) or not all(isinstance(r, str) for r in related):
        raise _fail("related", f"needs a list of report folders, got {related!r}")
    return CampaignSpec(name.strip(), path.resolve(), threads, tuple(trainings), str(raw.get("description", "")),
                        tuple(related), tuple(tunings))


ONLY_KEYS = ("block", "dataset", "protocol", "arm", "seed")
ONLY_FORM = f"space-separated key=v1,v2 terms, key in {', '.join(ONLY_KEYS)}"


def only_terms(only: str) -> list[tuple[str, set[str]]]:
    """``--only`` parsed: (key, wanted values) per space-separated key=v1,v2 term (plural keys accepted;
    seeds as canonical integers, so ``seed=01`` means seed 1); UserInputError on a bad term or a seed
    that is not an integer."""
    terms = []
    for term in only.split():
        key, _, values = term.partition("=")
        key = key.rstrip("s") if key.rstrip("s") in ONLY_KEYS else key
        wanted = [v.strip() for v in values.split(",") if v.strip()]
        if key not in ONLY_KEYS or not wanted:
            raise UserInputError("only", f"bad term {term!r}", ONLY_FORM)
        if key == "seed":
            bad = [v for v in wanted if not re.fullmatch(r"-?[0-9]+", v)]
            if bad:
                raise UserInputError("only", f"seed {bad[0]!r} is not an integer", "integer seeds, e.g. seed=0,1")
            wanted = [str(int(v)) for v in wanted]
        terms.append((key, set(wanted)))
    return terms


def only_values(spec: CampaignSpec) -> dict[str, set[str]]:
    """What each ``--only`` key can match in ``spec``: its cells' and its tuned blocks' values (a tuned
    block's cells exist only once its studies are complete, but it can be selected before)."""
    values: dict[str, set[str]] = {key: set() for key in ONLY_KEYS}
    for t in spec.trainings:
        for key, value in zip(ONLY_KEYS, (t.block, t.cfg.dataset, t.cfg.protocol, t.arm, str(t.seed))):
            values[key].add(value)
    for tuning in spec.tunings:
        values["block"].add(tuning.block)
        values["dataset"].add(tuning.dataset)
        values["protocol"].add("tuned")
        values["arm"].update(tuning.arms)
        values["seed"].update(map(str, tuning.seeds))
    return values


def check_only(spec: CampaignSpec, only: str) -> None:
    """Reject an ``--only`` that names something the spec does not have: a filter matching nothing
    would answer "nothing missing", which reads as a complete store rather than as a typo."""
    values = only_values(spec)
    for key, wanted in only_terms(only):
        unknown = sorted(wanted - values[key], key=lambda v: (len(v), v))
        if unknown:
            known = ",".join(sorted(values[key], key=lambda v: (int(v), v) if key == "seed" else (0, v)))
            raise UserInputError("only", f"{key} {unknown[0]!r} is not in the spec {spec.path.name}",
                                 f"{key}={known}")


def select(trainings: tuple[Training, ...] | list[Training], only: str) -> list[Training]:
    """``--only`` filter: space-separated key=v1,v2 terms over block, dataset, protocol, arm, seed."""
    keys = {"block": lambda t: t.block, "dataset": lambda t: t.cfg.dataset, "protocol": lambda t: t.cfg.protocol,
            "arm": lambda t: t.arm, "seed": lambda t: str(t.seed)}
    chosen = list(trainings)
    for key, wanted in only_terms(only):
        chosen = [t for t in chosen if keys[key](t) in wanted]
    return chosen


def select_tunings(tunings: tuple[Tuning, ...] | list[Tuning], only: str) -> list[Tuning]:
    """``--only`` for tuned blocks: their block, dataset and protocol terms apply (a block's studies run
    for all its arms and seeds at once, so arm and seed terms do not split them)."""
    keys = {"block": lambda t: t.block, "dataset": lambda t: t.dataset, "protocol": lambda t: "tuned"}
    chosen = list(tunings)
    for key, wanted in only_terms(only):
        if key in keys:
            chosen = [t for t in chosen if keys[key](t) in wanted]
    return chosen
