"""The report's "Bottom line": at most six sentences, each computed from the verdict records.

Why a module of its own: the answer a reader takes away must be the verdicts' own, never prose written
beside them. Each verdict record (one per claim and protocol with data) falls in one of six groups, and
each group with members is one sentence with the members' numbers and intervals: what holds against
both classical arms, what holds only against the CNN (the control, the same network without the circuit,
does as well), what holds only against the control, what is too small to matter, what does not hold, and
what stays unresolved and why. A group's first ``SHOWN_PER_SENTENCE`` claims carry their numbers; the
rest are named, so a sentence stays a sentence.
"""
from __future__ import annotations

from dataclasses import dataclass

from hqcbench.report.formatting import fmt_claim_interval
from hqcbench.report.stats import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    NEGLIGIBLE,
    NO_DATA,
    NO_VERDICT,
    NOT_TESTABLE,
    Interval,
    seeds_of,
)

SHOWN_PER_SENTENCE = 2
HOLDS_CNN_ONLY = "holds against cnn only"
HOLDS_CONTROL_ONLY = "holds against control only"


@dataclass(frozen=True)
class Side:
    """hybrid - one classical arm: its own verdict and interval (display units)."""

    arm: str  # cnn | control
    status: str
    interval: Interval | None
    unit: str


@dataclass(frozen=True)
class VerdictRecord:
    """One claim under one protocol, as the bottom line reads it."""

    claim: str  # plain label ("more accurate, MNIST")
    protocol: str
    status: str  # the joint verdict's status
    cnn: Side
    control: Side
    why: str = ""  # for an unresolved verdict: why, in a few words
    rank: int = 0  # order within a sentence: the question's core (accuracy, robustness) before the rest


# (group key, sentence opening); the order of the sentences
GROUPS: tuple[tuple[str, str], ...] = (
    ("both", "Holds against both the CNN and the control"),
    ("cnn", "Holds against the CNN only, while the control (the same network with a classical layer in place of "
            "the circuit) does as well"),
    ("control", "Holds against the control only, while the CNN does as well or better"),
    ("negligible", "Negligible in size, below the claim's threshold of practical relevance"),
    ("refuted", "Does not hold"),
    ("unresolved", "Unresolved"),
)


def group_of(record: VerdictRecord) -> str:
    """Which sentence a record belongs to."""
    status = record.status
    if status == HOLDS:
        return "both"
    if status.startswith(HOLDS_CNN_ONLY):
        return "cnn"
    if status.startswith(HOLDS_CONTROL_ONLY):
        return "control"
    if status == NEGLIGIBLE:
        return "negligible"
    if status == DOES_NOT_HOLD or (status not in (INCONCLUSIVE, NO_VERDICT, NOT_TESTABLE)
                                   and not status.startswith("unresolved")):
        return "refuted"  # including a partial verdict ("faster, but not 5-12x")
    return "unresolved"


def why_unresolved(record: VerdictRecord) -> str:
    """A few words on why a verdict did not settle."""
    if record.why:
        return record.why
    if record.status == INCONCLUSIVE:
        return "the intervals contain no difference"
    if record.status == NO_VERDICT:
        return "too few seeds"
    return record.status


def _side(side: Side, name: str) -> str:
    if side.interval is None or side.status == NO_DATA:
        return ""
    return f"{fmt_claim_interval(side.interval, side.unit, with_n=False)} vs {name}"  # seeds: once per sentence


def seeds_text(records: list[VerdictRecord]) -> str:
    """'5 seeds' when every comparison of the sentence rests on the same number, else '3-5 seeds'."""
    ns = sorted({seeds_of(s.interval) for r in records for s in (r.cnn, r.control) if s.interval is not None})
    if not ns:
        return ""
    span = str(ns[0]) if len(ns) == 1 else f"{ns[0]}-{ns[-1]}"
    return f"{span} seed{'s' if ns[-1] != 1 else ''}"


def _numbers(record: VerdictRecord) -> str:
    parts = [p for p in (_side(record.cnn, "CNN"), _side(record.control, "control")) if p]
    return ", ".join(parts)


def _item(claim: str, records: list[VerdictRecord], group: str) -> str:
    """'more accurate, MNIST (paper: +1.37 pp [...] (n=5) vs CNN, ...; tuned: ...)'."""
    per_protocol = []
    for r in records:
        text = f"{r.protocol}: {_numbers(r)}"
        if group == "unresolved":
            text += f" ({why_unresolved(r)})"
        elif group == "refuted" and (r.why or r.status != DOES_NOT_HOLD):
            text += f" ({r.why or r.status})"
        per_protocol.append(text)
    return f"{claim} ({'; '.join(per_protocol)})"


def _rest(claims: list[str], by_claim: dict[str, list[VerdictRecord]], group: str) -> str:
    """The claims past the shown ones, named with their protocols; unresolved ones grouped by why."""
    if not claims:
        return ""
    whys: dict[str, list[str]] = {}
    for claim in claims:
        for r in by_claim[claim]:
            key = why_unresolved(r) if group == "unresolved" else ""
            whys.setdefault(key, []).append(f"{claim} ({r.protocol})")
    parts = [(f"{why}: " if why else "") + ", ".join(items) for why, items in whys.items()]
    return "; also " + "; ".join(parts) + " (numbers in the table below)"


def bottom_line(records: list[VerdictRecord]) -> list[str]:
    """At most six sentences, one per group with members, in GROUPS order; none without records."""
    sentences = []
    for key, opening in GROUPS:
        members = [r for r in records if r.status != NO_DATA and group_of(r) == key]
        if not members:
            continue
        by_claim: dict[str, list[VerdictRecord]] = {}
        for r in members:
            by_claim.setdefault(r.claim, []).append(r)
        claims = sorted(by_claim, key=lambda c: by_claim[c][0].rank)  # stable: claims' own order within a rank
        shown = [_item(c, by_claim[c], key) for c in claims[:SHOWN_PER_SENTENCE]]
        tail = _rest(claims[SHOWN_PER_SENTENCE:], by_claim, key)
        seeds = seeds_text([r for c in claims[:SHOWN_PER_SENTENCE] for r in by_claim[c]])
        sentences.append(f"{opening} ({seeds}, 95 % intervals): {'; '.join(shown)}{tail}.")
    return sentences
