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

Every cell is validated as a RunConfig when the spec is read, so a typo fails before any compute.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hqcbench.config import FIELD_META, FIELD_TYPES, RunConfig, convert
from hqcbench.errors import UserInputError
from hqcbench.jobs.fingerprint import training_fingerprint

CROSS_KEYS = ("datasets", "protocols", "arms", "seeds")
TOP_KEYS = ("name", "threads", "description", "related", "defaults", "blocks")
PER_CELL = ("dataset", "protocol", "arms", "seeds")  # set by the cross product, not by a block
MACHINE_FIELDS = ("data_dir", "device", "threads")  # where a campaign runs, not what it computes
SPEC_ALLOWED = f"top level: {', '.join(TOP_KEYS)}; a block: name, {', '.join(CROSS_KEYS)} and RunConfig fields"


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
class CampaignSpec:
    name: str
    path: Path
    threads: int
    trainings: tuple[Training, ...]
    description: str = ""
    related: tuple[str, ...] = ()  # other report folders (relative to this one) for cross-dataset rows

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
        value = ",".join(map(str, raw)) if isinstance(raw, list) else raw
        out[key] = convert(key, value, FIELD_TYPES[key], FIELD_META[key]["allowed"])
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
    seen: dict[str, str] = {}
    for index, block in enumerate(blocks):
        bname = block.get("name") or f"block{index + 1}"
        where = f"blocks.{bname}"
        settings = {**defaults, **_fields({k: v for k, v in block.items() if k not in ("name", *CROSS_KEYS)}, where)}
        if threads:
            settings["threads"] = threads
        for dataset in _list(block, "datasets", where):  # seed before arm: each seed's group completes early
            for protocol in _list(block, "protocols", where):
                for seed in _list(block, "seeds", where):
                    for arm in _list(block, "arms", where):
                        cfg = RunConfig(**{**settings, "dataset": str(dataset), "protocol": str(protocol),
                                           "arms": str(arm), "seeds": str(seed)}).validate()
                        fingerprint, fields = training_fingerprint(cfg, str(arm), int(seed))
                        cell = Training(bname, str(arm), int(seed), cfg, fingerprint, fields)
                        if fingerprint in seen:
                            raise _fail(where, f"{cell.label()} trains the same model as {seen[fingerprint]}")
                        seen[fingerprint] = cell.label()
                        trainings.append(cell)
    related = raw.get("related", [])
    if not isinstance(related, list) or not all(isinstance(r, str) for r in related):
        raise _fail("related", f"needs a list of report folders, got {related!r}")
    return CampaignSpec(name.strip(), path.resolve(), threads, tuple(trainings), str(raw.get("description", "")),
                        tuple(related))


def select(trainings: tuple[Training, ...] | list[Training], only: str) -> list[Training]:
    """``--only`` filter: space-separated key=v1,v2 terms over block, dataset, protocol, arm, seed."""
    keys = {"block": lambda t: t.block, "dataset": lambda t: t.cfg.dataset, "protocol": lambda t: t.cfg.protocol,
            "arm": lambda t: t.arm, "seed": lambda t: str(t.seed)}
    chosen = list(trainings)
    for term in only.split():
        key, _, values = term.partition("=")
        key = key.rstrip("s") if key.rstrip("s") in keys else key
        if key not in keys or not values:
            raise UserInputError("only", f"bad term {term!r}",
                                 "space-separated key=v1,v2 terms, key in block, dataset, protocol, arm, seed")
        wanted = {v.strip() for v in values.split(",") if v.strip()}
        chosen = [t for t in chosen if keys[key](t) in wanted]
    return chosen
