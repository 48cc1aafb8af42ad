"""How much memory the quantum layer needs, checked before a run trains anything.

Why: a state vector holds 2**n complex amplitudes per sample, so from ~16 qubits one forward and
backward pass needs gigabytes, and running out of memory after an hour of data loading and
training (or, worse, in the attack step after training) wastes the run. ``estimate_peak_bytes``
counts what the layer holds at its peak for one pass; ``memory_shortfall`` compares the largest
pass a run makes with the memory available on its device (``available_bytes``: free CUDA memory,
else the system's available RAM) and says why it would not fit. The jobs that build models call
``check_memory`` (``check_tune_memory`` for a search) right after validating their config, so
``python -m hqcbench run --n_qubits 18 ...`` on a small machine fails in a second with one line
naming n_qubits, the estimate and the memory available.

What the estimate counts (bytes; S = one state vector of the pass's rows, 8 bytes per amplitude
in complex64, 16 in complex128; C = the same for one chunk, ``CHUNK_AMPLITUDES``):

* the layer's tables: the +-1 readout tables (three, 20 n bytes per basis state) and the CNOT-ring
  permutation and its inverse (16 bytes per basis state);
* forward only (evaluation, no autograd): 4 C (encoded state, a product's input and output, the
  readout's squares; measured 2.6-3.1 C);
* ``backprop``: autograd keeps ``adjoint.backprop_saved_states`` state vectors for the whole batch,
  plus 16 C in flight during its backward pass (gradients and the copies ``torch.matmul`` makes to
  broadcast); the ``unitary`` method keeps its 2**n x 2**n matrices instead;
* ``adjoint``: the final state of the whole batch (S) plus 10 C in flight (psi and lambda
  together, their undone copy, the ring gather, the same broadcast copies), whatever the depth;
* amplitude encoding with gradients: S + 4 C more (the input's gradient, the normalisation's);
* the TorchQuantum engine (reference only): about one state per gate, no chunking.

The constants come from the peak-RSS rise (VmHWM) of one forward and backward pass in a fresh
process on the dev machine (glibc allocator; 14-18 qubits, batch 32 and 256, both methods and
encodings): the estimate lay between 0.85x and 1.8x of it, erring high where it erred by more than
a few percent. The rise itself varies between identical runs (amplitude encoding, 16 qubits:
167-335 MiB), so the estimate is a guard against what cannot fit, not a prediction to the MiB.

It leaves out what does not grow with the circuit (the CNN, the optimiser, the data), so a check
keeps ``MEMORY_FRACTION`` of the available memory for them. A run's passes: training
(``batch_size``, backward), evaluation (``EVAL_BATCH_MIN`` or more samples, forward only) and, with
attacks, ``ATTACK_BATCH_MAX`` samples with input gradients; finite-shot training runs the
parameter-shift readout, whose shifted circuits are chunked (``readout.MAX_AMPLITUDES_PER_CHUNK``).
"""
from __future__ import annotations

import psutil
import torch

from hqcbench import arms as arm_registry
from hqcbench.config import MAX_QUBITS, RunConfig, TuneConfig
from hqcbench.errors import UserInputError
from hqcbench.models.adjoint import DIFF_METHODS, backprop_saved_states, choose_diff_method
from hqcbench.models.circuit import best_groups, choose_method, input_width, wire_groups
from hqcbench.models.readout import MAX_AMPLITUDES_PER_CHUNK

MEMORY_FRACTION = 0.8  # of the available memory, for the layer; the rest for the CNN, optimiser and data
# Jobs keep freed memory in the heap (hqcbench.allocator): freed state vectors stay beside the live
# ones, and at 16 qubits / batch 256 the peak-RSS rise of a forward + backward grew from 739 MiB
# (glibc's default) by 510 MiB, about 1.7x (benchmarks/allocator.py). The check allows for it.
HEAP_ALLOWANCE = 2.0
EVAL_BATCH_MIN = 256  # training.loop.evaluate runs max(batch_size, 256) samples per pass (no autograd)
ATTACK_BATCH_MAX = 1024  # evaluation.attacks.attack_batch_size's cap (a test keeps the two equal)
GIB = 2 ** 30
# Rows simulated at once: the layer splits a batch so that one chunk holds at most this many
# amplitudes (64 MiB of complex64). Evaluation batches (>= 256) and attack batches (up to 1024) at
# 16-20 qubits would otherwise need gigabytes per state vector. Below 13 qubits no batch up to 2048 is split.
CHUNK_AMPLITUDES = 2 ** 23


def chunk_rows(n_qubits: int) -> int:
    """Most samples the layer simulates at once (``CHUNK_AMPLITUDES`` amplitudes per chunk)."""
    return max(1, CHUNK_AMPLITUDES >> n_qubits)


def estimate_peak_bytes(n_qubits: int, depth: int, batch: int, method: str = "auto",
                        dtype: torch.dtype = torch.float32, encoding: str = "angle", ansatz: str = "strong",
                        backward: bool = True, engine: str = "fused") -> int:
    """Peak bytes the quantum layer holds for one pass over ``batch`` samples (see the module docstring).

    method: the differentiation method, ``auto`` (as ``QuantumLayer`` resolves it per chunk),
    ``backprop`` or ``adjoint``; ignored when ``backward`` is False (a pass autograd does not
    record keeps nothing). dtype: of the layer's inputs (float64 simulates in complex128).
    """
    if method not in DIFF_METHODS:
        raise ValueError(f"estimate_peak_bytes: unknown method {method!r} (allowed: {', '.join(DIFF_METHODS)})")
    dim, item = 2 ** n_qubits, 16 if dtype == torch.float64 else 8
    tables = dim * (20 * n_qubits + 16)
    inputs = batch * input_width(n_qubits, encoding) * item // 2  # the layer's real input
    state = batch * dim * item
    if engine == "torchquantum":  # every gate's output kept: encoding, rotations and CNOTs per layer
        per_layer = n_qubits * (2 if ansatz == "strong" else 1) + n_qubits
        kept = (n_qubits + depth * per_layer) if backward else 2
        return int(tables + inputs + (kept + 3) * state)
    rows = min(batch, chunk_rows(n_qubits))
    chunk = rows * dim * item
    if not backward:
        return int(tables + inputs + 4 * chunk + _unitary_bytes(n_qubits, depth, rows, item))
    base = tables + inputs + ((state + 4 * chunk) if encoding == "amplitude" else 0)
    if method == "auto":
        method = choose_diff_method(n_qubits, depth, rows, item)
    if method == "adjoint":
        return int(base + state + 10 * chunk + _group_matrix_bytes(n_qubits, depth, rows, item))
    if choose_method(n_qubits, depth, rows) == "unitary":
        return int(base + 2 * state + 3 * chunk + 3 * _unitary_bytes(n_qubits, depth, rows, item))
    kept = backprop_saved_states(n_qubits, depth, rows) * state + _group_matrix_bytes(n_qubits, depth, rows, item)
    return int(base + kept + 16 * chunk)


def _unitary_bytes(n_qubits: int, depth: int, rows: int, item: int) -> int:
    """The ``unitary`` method's 2**n x 2**n matrices (one per layer, then their pairwise products)."""
    if choose_method(n_qubits, depth, rows) != "unitary":
        return 0
    return 2 * depth * 4 ** n_qubits * item


def _group_matrix_bytes(n_qubits: int, depth: int, rows: int, item: int) -> int:
    groups = wire_groups(n_qubits, best_groups(n_qubits, depth, rows))
    # autograd's copy of the gathered factors (size of them), the product, its gradient; per layer
    return sum(depth * 4 ** size * item * (size + 2) for _, size in groups)


def available_bytes(device: torch.device | str) -> int:
    """Memory a run on ``device`` can still take: free CUDA memory, else the system's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)


def run_device(choice: str) -> torch.device | None:
    """The device a ``device`` choice (auto | cpu | cuda) trains on; None when CUDA is asked for and
    absent. The one rule: the jobs resolve their device with it too (``jobs.run.resolve_device``)."""
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        return None
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and cuda) else "cpu")


def run_passes(cfg: RunConfig) -> list[tuple[str, int, bool]]:
    """(what, samples, autograd records it) for every kind of pass a run sends through the layer."""
    trains_exactly = cfg.train_shot_count is None  # finite-shot training: sampled forward, shifted circuits
    passes = [("training", cfg.batch_size, trains_exactly),
              ("evaluation", max(cfg.batch_size, EVAL_BATCH_MIN), False)]
    if cfg.attack_list:
        passes.append(("attacks", ATTACK_BATCH_MAX, True))
    return passes


def run_peak_bytes(cfg: RunConfig) -> tuple[int, str]:
    """The largest layer estimate over ``run_passes`` and a description of that pass."""
    dtype, best = torch.float32, (0, "")
    for what, samples, backward in run_passes(cfg):
        peak = estimate_peak_bytes(cfg.n_qubits, cfg.depth, samples, "auto", dtype, cfg.encoding, cfg.ansatz,
                                   backward, cfg.engine)
        if what == "training" and not backward:  # parameter shift: chunked shifted circuits on top
            peak += 4 * min(MAX_AMPLITUDES_PER_CHUNK, CHUNK_AMPLITUDES) * 8
        if peak > best[0]:
            grads = "with gradients" if backward else "forward only"
            best = (peak, f"{what} pass ({samples} samples, {grads})")
    return best


def memory_shortfall(cfg: RunConfig) -> str | None:
    """Why ``cfg``'s circuit would not fit in memory on its device, or None.

    Only the fair protocol's circuit arms have a circuit sized by ``n_qubits`` (the paper circuit is
    4 qubits). Reads fields ``RunConfig.validate`` has already checked.
    """
    if cfg.protocol == "paper" or not any(arm_registry.get(arm).has_circuit for arm in cfg.arm_list):
        return None
    device = run_device(cfg.device)
    if device is None:
        return None
    peak, what = run_peak_bytes(cfg)
    allowance = HEAP_ALLOWANCE if device.type == "cpu" else 1.0  # CUDA memory has its own caching allocator
    needed = allowance * peak
    free = available_bytes(device)
    if needed <= MEMORY_FRACTION * free:
        return None
    advice = ("fewer qubits or attacks none (attack batches hold up to "
              f"{ATTACK_BATCH_MAX} samples)") if what.startswith("attacks") else "fewer qubits or a smaller batch_size"
    return (f"{cfg.n_qubits} qubits (depth {cfg.depth}, {cfg.encoding} encoding, {cfg.engine} engine) need about "
            f"{needed / GIB:.2f} GiB for the quantum layer's {what} ({peak / GIB:.2f} GiB live, x{allowance:g} for "
            f"freed memory the heap keeps), more than {MEMORY_FRACTION:.0%} of the "
            f"{free / GIB:.2f} GiB available on {device.type}; use {advice}")

def check_memory(cfg: RunConfig) -> None:
    """Refuse, as one line naming ``n_qubits``, a configuration whose circuit would not fit in memory. The
    jobs that build models call it after ``validate`` (explicitly: a check that ran only when this module
    happened to be imported skipped itself in a notebook)."""
    shortfall = memory_shortfall(cfg)
    if shortfall:
        raise UserInputError("n_qubits", shortfall, f"1..{MAX_QUBITS}, within the memory available")


def check_tune_memory(tcfg: TuneConfig) -> None:
    """Refuse a search whose largest circuit would not fit, naming ``qubits_max``."""
    largest = tcfg.largest_circuit()
    shortfall = memory_shortfall(largest) if largest is not None else None
    if shortfall:
        raise UserInputError("qubits_max", f"the largest circuit searched (qubits_max={tcfg.qubits_max}, "
                             f"depth_max={tcfg.depth_max}) would not fit: {shortfall}",
                             f"1..{MAX_QUBITS}, within the memory available")
