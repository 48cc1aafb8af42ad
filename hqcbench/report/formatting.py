"""How the report writes a number: values, intervals and claim cells as text, and URIs and paths as a
reader elsewhere may see them.

Why a module of its own: every table cell goes through these few functions, so the report's
conventions (percent with two decimals, signed differences with their interval ends, "(1 run)" where
there is no interval, "no data" where nothing was logged, per-seed values in seed order, a flag on an
interval that leaves its metric's range) are decided once and read in one place. Paths: a report is
committed and read on other machines, so no machine's absolute path is printed; a path is shown
relative to the report folder (or as its last part when the two share nothing but the root).
Pure functions of their arguments: no MLflow, no pandas.
"""
from __future__ import annotations

import math
import os
import re
from typing import Sequence
from urllib.parse import urlsplit, urlunsplit

from hqcbench.report.stats import MIN_SEEDS, POWER, SEEDS_CAP, Interval, RankEvidence

NO_DATA_CELL = "no data"
# A metric's format code -> the unit of a difference of two such values (pct: percentage points).
DIFF_UNITS = {"pct": "pp", "sec": "s", "int": "", "mb": "MB", "cores": "cores", "gb": "GB", "pctpt": "pp", "num": "",
              "dur": ""}
# Claim units shown with an explicit sign (differences); factors (x) and reductions (%) are not signed.
SIGNED_CLAIM_UNITS = ("pp", "GB", "MB", "cores")
# The values a metric of each format can take (stored units): an interval beyond them is flagged.
RANGES: dict[str, tuple[float | None, float | None]] = {"pct": (0.0, 1.0), "sec": (0.0, None), "int": (0.0, None),
                                                        "mb": (0.0, None), "cores": (0.0, None), "gb": (0.0, None)}
# An absolute path inside free text: starts with "/" after a space, quote, "=", "(" or the start of the text
# (so "http://host/x" and "a/b" are left alone).
_ABS_PATH = re.compile(r"""(?<![^\s'"=(,])/[^\s'"`;,)]+""")


def _scale(fmt: str) -> float:
    """Fractions are stored (0.98); percentages are shown (98.00)."""
    return 100.0 if fmt == "pct" else 1.0


def fmt_value(value: float, fmt: str, signed: bool = False) -> str:
    """One value in its format: pct | sec | int | mb | cores | gb | pctpt | num."""
    v = value * _scale(fmt)
    sign = "+" if signed else ""
    if fmt == "dur":
        return ("+" if signed and v >= 0 else "") + fmt_duration(v)
    if fmt == "int":
        return f"{v:{sign},.0f}"
    if fmt == "mb":
        return f"{v:{sign}.0f}"
    if fmt == "sec":
        return f"{v:{sign}.2f}" if abs(v) >= 1 else f"{v:{sign}.3f}"
    if fmt in ("pct", "cores", "gb"):
        return f"{v:{sign}.2f}"
    if fmt == "pctpt":
        return f"{v:{sign}.1f}"
    return f"{v:{sign}.4g}"


DURATION_UNITS = (("years", 365.25 * 86400), ("days", 86400.0), ("h", 3600.0), ("min", 60.0), ("s", 1.0))


def duration_unit(seconds: float) -> tuple[str, float]:
    """The largest unit in which ``seconds`` is at least 1 (seconds below that): 25,449,974 s -> days."""
    for name, size in DURATION_UNITS:
        if abs(seconds) >= size:
            return name, size
    return "s", 1.0


def fmt_duration(seconds: float, unit: tuple[str, float] | None = None) -> str:
    """'295 days', '3.2 h', '12.5 s': three significant figures in the largest sensible unit (or ``unit``)."""
    name, size = unit or duration_unit(seconds)
    return f"{seconds / size:.3g} {name}"


def fmt_interval(iv: Interval | None, fmt: str, signed: bool = False, unit: str = "") -> str:
    """t: 'mean ± half'; bootstrap: 'mean [low, high] (bootstrap)'; single: 'mean (1 run)'. Durations
    (fmt 'dur', seconds) in the mean's largest sensible unit, the half-width in the same unit."""
    if iv is None:
        return NO_DATA_CELL
    if fmt == "dur":
        chosen = duration_unit(iv.mean)
        half = iv.half_width
        if half is None:
            return f"{fmt_duration(iv.mean, chosen)} (1 run)"
        return f"{fmt_duration(iv.mean, chosen)} ± {fmt_duration(half, chosen)}"
    suffix = f" {unit}" if unit else ""
    mean = fmt_value(iv.mean, fmt, signed)
    half = iv.half_width
    if iv.low is None or iv.high is None or half is None:
        return f"{mean}{suffix} (1 run)"
    if iv.method == "bootstrap":
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, signed)}, {fmt_value(iv.high, fmt, signed)}] (bootstrap)"
    if signed:  # differences: show the interval's ends, so its side of zero is read at a glance
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, True)}, {fmt_value(iv.high, fmt, True)}]"
    return f"{mean} ± {fmt_value(half, fmt)}{suffix}"


def fmt_claim_interval(iv: Interval | None, unit: str, with_n: bool = True) -> str:
    """A claims-table cell: 'mean unit [low, high] (n=…)', already in the claim's display unit; ``with_n``
    False leaves the seed count of an interval out (a sentence that says it once)."""
    if iv is None:
        return NO_DATA_CELL
    sign = "+" if unit in SIGNED_CLAIM_UNITS else ""

    def f(v: float) -> str:
        return f"{v:{sign}.2f}"

    mean = f(iv.mean) + ("x" if unit == "x" else f" {unit}")
    n = f"n={1 if iv.method == 'bootstrap' else iv.n}"
    if iv.low is None or iv.high is None:
        return f"{mean} (no interval, {n})"
    tail = " bootstrap" if iv.method == "bootstrap" else ""
    return f"{mean} [{f(iv.low)}, {f(iv.high)}]" + (f" ({n}{tail})" if with_n else "")


def fmt_p(p: float) -> str:
    """A p-value to three decimals ('0.031'), '< 0.001' below that: more digits would claim a precision
    that five seeds do not have."""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_claim_value(value: float, unit: str) -> str:
    """One value in a claim's display unit: '+1.00 pp', '0.49x', '6.08 %'."""
    if unit == "x":
        return f"{value:.2f}x"
    sign = "+" if unit in SIGNED_CLAIM_UNITS else ""
    return f"{value:{sign}.2f} {unit}"


def fmt_seeds_needed(evidence: RankEvidence) -> str:
    """'12' seeds, '>1000' past the cap, '' where the verdict is settled (nothing asked): claims.csv's cell."""
    if not evidence.needed_asked:
        return ""
    return str(evidence.seeds_needed) if evidence.seeds_needed is not None else f">{SEEDS_CAP}"


def fmt_evidence(evidence: RankEvidence, holm_p: float | None, unit: str) -> str:
    """What stands beside a comparison's interval in the detailed claims table: 'signed-rank p = 0.031
    (Holm 0.500); Hodges-Lehmann +1.00 pp; would need 12 seeds (80 % power)'. Empty without a test."""
    if not evidence.test:
        return ""
    parts = []
    if evidence.p is not None:
        holm = f"Holm {fmt_p(holm_p)}" if holm_p is not None else f"no Holm: under {MIN_SEEDS} seeds"
        parts.append(f"{evidence.test} p = {fmt_p(evidence.p)} ({holm})")
    return "; ".join(parts + shift_and_seeds(evidence, unit))


def shift_and_seeds(evidence: RankEvidence, unit: str) -> list[str]:
    """The parts after the p-value: 'Hodges-Lehmann +1.00 pp', 'would need 12 seeds (80 % power)'."""
    parts = []
    if evidence.shift is not None:
        parts.append(f"Hodges-Lehmann {fmt_claim_value(evidence.shift, unit)}")
    if evidence.needed_asked:
        needed = fmt_seeds_needed(evidence).replace(">", "more than ")
        parts.append(f"would need {needed} seeds ({POWER * 100:.0f} % power)")
    return parts


def redact_uri(uri: str) -> str:
    """A tracking URI without any password (never print credentials into a report or an error)."""
    parts = urlsplit(uri)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri


def fmt_seed_values(values: Sequence[float | None], fmt: str, signed: bool = False) -> str:
    """Per-seed values, seed order, one decimal less than the mean: '99.0 / 99.2 / 98.9' ('-' where missing)."""
    def one(v: float | None) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if fmt == "pct":
            return f"{v * 100:{'+' if signed else ''}.1f}"
        return fmt_value(v, fmt, signed)
    return " / ".join(one(v) for v in values)


def fmt_claim_values(values: Sequence[float], unit: str) -> str:
    """A claim's per-seed quantities in its display unit: '+1.0 / +0.9' (pp), '2.1 / 1.9' (x)."""
    sign = "+" if unit in SIGNED_CLAIM_UNITS else ""
    return " / ".join("-" if math.isnan(v) else f"{v:{sign}.2f}" if unit == "x" else f"{v:{sign}.1f}"
                      for v in values)


def range_flag(iv: Interval | None, fmt: str) -> str:
    """' [interval above 100 %]' (or below 0 ...) when the interval leaves the metric's possible values."""
    if iv is None or iv.low is None or iv.high is None or fmt not in RANGES:
        return ""
    low, high = RANGES[fmt]
    unit = " %" if fmt == "pct" else ""
    if high is not None and iv.high > high:
        return f" [interval above {high * _scale(fmt):g}{unit}: the t-interval ignores the bound]"
    if low is not None and iv.low < low:
        return f" [interval below {low * _scale(fmt):g}{unit}: the t-interval ignores the bound]"
    return ""


def relative_path(path: str, base: str) -> str:
    """``path`` relative to the folder ``base``; just its last part when they share only the root."""
    absolute, start = os.path.abspath(path), os.path.abspath(base)
    if os.path.commonpath([absolute, start]) == os.sep:
        return ".../" + os.path.basename(absolute.rstrip(os.sep))
    return os.path.relpath(absolute, start)


def relative_paths(text: str, base: str) -> str:
    """Every absolute path in ``text`` made relative to ``base`` (see :func:`relative_path`)."""
    return _ABS_PATH.sub(lambda m: relative_path(m.group(0), base), text)


def store_text(uri: str, base: str) -> str:
    """A tracking URI for the report: passwords redacted; a local store (sqlite:///..., file:///..., a path)
    shown relative to the report folder ``base``."""
    for scheme in ("sqlite:///", "file://"):
        if uri.startswith(scheme):
            path = uri[len(scheme):]
            if path.startswith("/"):
                return f"{scheme}{relative_path(path, base)} (relative to this report's folder)"
            return uri
    if uri.startswith("/"):
        return f"{relative_path(uri, base)} (relative to this report's folder)"
    if is_loopback(uri):
        return "a tracking server on the machine that built the report (its address in MLFLOW_TRACKING_URI there)"
    return redact_uri(uri)


LOOPBACK_HOSTS = ("localhost", "127.", "::1", "0.0.0.0")


def is_loopback(url: str) -> bool:
    """A URL no other reader can open: a loopback host is the reader's own machine, not the author's."""
    host = (urlsplit(url).hostname or "") if "://" in url else ""
    return any(host == h or host.startswith(h) for h in LOOPBACK_HOSTS)
