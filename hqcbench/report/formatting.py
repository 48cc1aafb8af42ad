"""How the report writes a number: values, intervals and claim cells as text, and URIs without passwords.

Why a module of its own: every table cell goes through these few functions, so the report's
conventions (percent with two decimals, signed differences with their interval ends, "(1 run)" where
there is no interval, "no data" where nothing was logged) are decided once and read in one place.
Pure functions of their arguments: no MLflow, no pandas.
"""
from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from hqcbench.report.stats import Interval

NO_DATA_CELL = "no data"
# A metric's format code -> the unit of a difference of two such values (pct: percentage points).
DIFF_UNITS = {"pct": "pp", "sec": "s", "int": "", "mb": "MB", "cores": "cores", "gb": "GB", "pctpt": "pp", "num": ""}
# Claim units shown with an explicit sign (differences); factors (x) and reductions (%) are not signed.
SIGNED_CLAIM_UNITS = ("pp", "GB", "MB", "cores")


def _scale(fmt: str) -> float:
    """Fractions are stored (0.98); percentages are shown (98.00)."""
    return 100.0 if fmt == "pct" else 1.0


def fmt_value(value: float, fmt: str, signed: bool = False) -> str:
    """One value in its format: pct | sec | int | mb | cores | gb | pctpt | num."""
    v = value * _scale(fmt)
    sign = "+" if signed else ""
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


def fmt_interval(iv: Interval | None, fmt: str, signed: bool = False, unit: str = "") -> str:
    """t: 'mean ± half'; bootstrap: 'mean [low, high] (bootstrap)'; single: 'mean (1 run)'."""
    if iv is None:
        return NO_DATA_CELL
    suffix = f" {unit}" if unit else ""
    mean = fmt_value(iv.mean, fmt, signed)
    if not iv.has_interval:
        return f"{mean}{suffix} (1 run)"
    if iv.method == "bootstrap":
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, signed)}, {fmt_value(iv.high, fmt, signed)}] (bootstrap)"
    if signed:  # differences: show the interval's ends, so its side of zero is read at a glance
        return f"{mean}{suffix} [{fmt_value(iv.low, fmt, True)}, {fmt_value(iv.high, fmt, True)}]"
    return f"{mean} ± {fmt_value(iv.half_width, fmt)}{suffix}"


def fmt_claim_interval(iv: Interval | None, unit: str) -> str:
    """A claims-table cell: 'mean unit [low, high] (n=…)', already in the claim's display unit."""
    if iv is None:
        return NO_DATA_CELL
    sign = "+" if unit in SIGNED_CLAIM_UNITS else ""

    def f(v: float) -> str:
        return f"{v:{sign}.2f}"

    mean = f(iv.mean) + ("x" if unit == "x" else f" {unit}")
    n = f"n={1 if iv.method == 'bootstrap' else iv.n}"
    if not iv.has_interval:
        return f"{mean} (no interval, {n})"
    tail = " bootstrap" if iv.method == "bootstrap" else ""
    return f"{mean} [{f(iv.low)}, {f(iv.high)}] ({n}{tail})"


def redact_uri(uri: str) -> str:
    """A tracking URI without any password (never print credentials into a report or an error)."""
    parts = urlsplit(uri)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return uri
