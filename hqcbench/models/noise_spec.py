"""The ``noise`` parameter: its syntax, parsed once into a ``NoiseSpec``.

Why a module of its own: the syntax is a public contract (the CLI flag, campaign specs and the
``hqcbench.noise`` tag all spell noise models this way), and the jobs' up-front check, the evaluation
and the noise engine all read it. The allowed forms' text lives in ``hqcbench.config`` (as every
parameter's choices do); the grammar lives here. It imports nothing heavy: parsing never needs Qiskit;
whether a named device exists is checked by ``hqcbench.models.noise_device`` when the job starts.

Forms (docs/noise.md):

* ``none`` -- the noiseless circuit (the default);
* ``depolarizing:P`` -- after every gate, the depolarizing channel of probability P on the gate's
  qubits, Qiskit Aer's ``depolarizing_error(P, k)``: rho -> (1 - P) rho + P Tr(rho) I / 2**k;
* ``readout:P`` -- every measured bit flips with probability P (applied last);
* ``device:NAME`` -- a fake backend's calibration snapshot (qiskit-ibm-runtime, offline); it carries
  its own gate and readout errors, so it stands alone;
* compositions with ``+``: ``depolarizing:0.01+readout:0.02`` (each kind at most once);
* ``+ideal_loading`` beside ``depolarizing:P`` -- an idealisation, labelled as one wherever it is reported:
  the encoding's gates (the amplitude encoding's whole RY/CNOT tree) run without error, as if the device
  were handed the encoded state for free; only the ansatz is noisy. It says how much of the loss the data
  loading causes; no device loads a state without error, so it is never the answer under noise.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from hqcbench import names
from hqcbench.config import NOISE_ALLOWED, NOISE_METHODS, NOISE_SWEEP_ALLOWED
from hqcbench.errors import UserInputError

__all__ = ["NOISE_ALLOWED", "NOISE_METHODS", "NOISE_SWEEP_ALLOWED", "NoiseSpec", "parse_noise", "parse_sweep"]

_DEVICE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
IDEAL_LOADING = names.NOISE_IDEAL_LOADING


@dataclass(frozen=True)
class NoiseSpec:
    """A parsed noise model: None fields are absent (``NoiseSpec()`` is the noiseless circuit)."""

    depolarizing: float | None = None
    readout: float | None = None
    device: str | None = None
    ideal_loading: bool = False  # the encoding's gates error-free (an idealisation; needs depolarizing)

    @property
    def is_none(self) -> bool:
        return self.depolarizing is None and self.readout is None and self.device is None

    @property
    def gate_noise_free(self) -> bool:
        """No gate error at all (``none``, ``readout:P``, ``depolarizing:0``): the noiseless engine computes
        the state exactly, and only the readout map is applied after it."""
        return self.device is None and not self.depolarizing

    def text(self) -> str:
        """The canonical spelling (what the ``hqcbench.noise`` tag records)."""
        if self.is_none:
            return "none"
        parts = []
        if self.device is not None:
            parts.append(f"device:{self.device}")
        if self.depolarizing is not None:
            parts.append(f"depolarizing:{self.depolarizing:g}")
        if self.readout is not None:
            parts.append(f"readout:{self.readout:g}")
        if self.ideal_loading:
            parts.append(IDEAL_LOADING)
        return "+".join(parts)


def _probability(term: str, raw: str, parameter: str, allowed: str = NOISE_ALLOWED) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UserInputError(parameter, f"{term!r}: {raw!r} is not a number", allowed) from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise UserInputError(parameter, f"{term!r}: probability {raw} outside [0, 1]", allowed)
    return value


def parse_noise(text: str, parameter: str = "noise") -> NoiseSpec:
    """``text`` -> NoiseSpec; any other spelling raises UserInputError naming ``parameter`` and the forms."""
    raw = (text or "").strip()
    if raw.lower() in ("", "none"):
        return NoiseSpec()
    found: dict[str, float | str] = {}
    ideal = False
    for term in raw.split("+"):
        term = term.strip()
        if term.lower() == IDEAL_LOADING:
            if ideal:
                raise UserInputError(parameter, f"{IDEAL_LOADING} given twice in {raw!r}", NOISE_ALLOWED)
            ideal = True
            continue
        kind, sep, value = term.partition(":")
        kind = kind.strip().lower()
        if not sep or kind not in ("depolarizing", "readout", "device"):
            raise UserInputError(parameter, f"unknown noise term {term!r}", NOISE_ALLOWED)
        if kind in found:
            raise UserInputError(parameter, f"{kind} given twice in {raw!r}", NOISE_ALLOWED)
        if kind == "device":
            name = value.strip()
            if not _DEVICE_NAME.match(name):
                raise UserInputError(parameter, f"{term!r}: bad device name", NOISE_ALLOWED)
            found[kind] = name
        else:
            found[kind] = _probability(term, value.strip(), parameter)
    if "device" in found and len(found) > 1:
        raise UserInputError(parameter, f"{raw!r}: device:NAME carries its own gate and readout errors and "
                             "stands alone", NOISE_ALLOWED)
    if ideal and "depolarizing" not in found:
        raise UserInputError(parameter, f"{raw!r}: {IDEAL_LOADING} makes the encoding's gates error-free, so it "
                             "needs depolarizing:P (a device's transpiled circuit mixes the encoding into its "
                             "routing)", NOISE_ALLOWED)
    dep, ro, dev = found.get("depolarizing"), found.get("readout"), found.get("device")
    return NoiseSpec(depolarizing=float(dep) if dep is not None else None,
                     readout=float(ro) if ro is not None else None,
                     device=str(dev) if dev is not None else None, ideal_loading=ideal)


def parse_sweep(text: str, parameter: str = "noise_sweep") -> list[float]:
    """``noise_sweep``: comma-separated depolarizing probabilities in [0, 1] (empty: no sweep)."""
    values = []
    for item in (text or "").split(","):
        item = item.strip()
        if item:
            values.append(_probability(item, item, parameter, NOISE_SWEEP_ALLOWED))
    if len(set(values)) != len(values):
        raise UserInputError(parameter, f"repeated value in {text!r}", NOISE_SWEEP_ALLOWED)
    return values
