"""The noise engine: hqcbench's circuit under gate and readout errors, batched over images.

Why its own engine: the noiseless layer (``hqcbench.models.quantum``) fuses gates and never holds a
mixed state; Qiskit Aer simulates noise exactly but one bound circuit per image. This module turns a
layer and a noise model into a list of gates with their errors (the logical circuit of
``noise_circuit`` with depolarizing errors, or a device's transpiled circuit from ``noise_device``),
runs it on every image at once by one of the two methods of ``noise_sim`` (``density``: the exact
density matrix; ``trajectories``: K seeded Monte-Carlo state vectors, with a standard error), and
reads each logical qubit's <Z> out of the measurement distribution after the readout errors.

* Memory: 8 x 4**n bytes per image for the density matrix at complex64 (``density_bytes``), checked
  before the work starts (``check_memory``); images are simulated in chunks (``chunk_images``);
  ``auto`` picks the density matrix while one image's fits ``AUTO_DENSITY_MAX_BYTES``.
* ``depolarizing:0`` and ``readout:P`` alone have no gate error: they go through the noiseless layer
  itself, so ``depolarizing:0`` equals the noiseless output bit for bit (the readout errors are then
  the affine map of <Z> ``ReadoutMap``).
* Finite shots (the layer's ``shots`` in eval mode, ``train_shots`` in training) apply on top: N
  outcomes are drawn from the noisy distribution (readout errors included), and the gradient is the
  exact one of the noisy <Z> (straight-through), not a parameter-shift estimate.

``noisy_layers`` swaps every ``QuantumLayer``'s forward for the noisy one inside a block (an evaluation,
or ``fit`` under ``train_noise``) and restores it after. Qiskit is imported only for a device.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, cast

import psutil
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hqcbench import arms as arm_registry
from hqcbench.config import DEFAULT_NOISE_TRAJECTORIES, RunConfig
from hqcbench.errors import UserInputError
from hqcbench.models import noise_device
from hqcbench.models.circuit import complex_dtype, real_dtype, z_sign_table
from hqcbench.models.noise_circuit import encoding_op_count, layer_ops, op_matrix, parameter_values
from hqcbench.models.noise_sim import Step, confuse, density_probs, marginal, mean_and_error, trajectory_probs
from hqcbench.models.noise_spec import NOISE_METHODS, NoiseSpec, parse_noise, parse_sweep
from hqcbench.models.paper import PAPER_QUBITS
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.readout import CircuitLayer, layer_rng, sample_expvals
from hqcbench.models.twin import quantum_submodules

DEFAULT_TRAJECTORIES = DEFAULT_NOISE_TRAJECTORIES
DENSITY_WORK_FACTOR = 4  # the state, its moved copy, the product and the next step's input
CHUNK_BYTES = 256 * 2 ** 20  # working memory of one chunk of images (both methods)
MEMORY_FRACTION = 0.5  # of the available memory: one image's density matrix beyond it is refused
AUTO_DENSITY_MAX_BYTES = 64 * 2 ** 20  # auto picks the density matrix while one image's fits this (n <= 11)


@dataclass
class ReadoutMap:
    """<Z_w> -> offset_w + scale_w <Z_w>: the per-qubit confusion matrix as an affine map of <Z>.

    With P(1|0) = a and P(0|1) = b, the measured <Z> is (b - a) + (1 - a - b) <Z>.
    """

    offset: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def symmetric(cls, p: float, n_qubits: int) -> "ReadoutMap":
        return cls(torch.zeros(n_qubits, dtype=torch.float64), torch.full((n_qubits,), 1 - 2 * p, dtype=torch.float64))

    @classmethod
    def from_flips(cls, p1_given_0: torch.Tensor, p0_given_1: torch.Tensor) -> "ReadoutMap":
        return cls(p0_given_1 - p1_given_0, 1 - p1_given_0 - p0_given_1)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.offset.to(z) + self.scale.to(z) * z


@dataclass
class NoisyResult:
    """<Z> per image and wire under noise; ``stderr`` (trajectories only) the Monte-Carlo standard error."""

    values: torch.Tensor
    method: str
    stderr: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------- memory
def density_bytes(n_qubits: int, images: int = 1, item: int = 8) -> int:
    """Bytes of the density matrices of ``images`` images: item x 4**n each (complex64: 8 bytes)."""
    return item * 4 ** n_qubits * images


def trajectory_bytes(n_qubits: int, trajectories: int, item: int = 8) -> int:
    return item * 2 ** n_qubits * trajectories


def choose_method(n_qubits: int, method: str = "auto") -> str:
    """``auto``: the exact density matrix while one image's fits ``AUTO_DENSITY_MAX_BYTES``, else trajectories."""
    if method not in NOISE_METHODS:
        raise UserInputError("noise_method", f"unknown method {method!r}", "|".join(NOISE_METHODS))
    if method != "auto":
        return method
    return "density" if density_bytes(n_qubits) <= AUTO_DENSITY_MAX_BYTES else "trajectories"


def check_memory(n_qubits: int, method: str, trajectories: int = DEFAULT_TRAJECTORIES,
                 available: int | None = None) -> None:
    """Refuse before any work a method whose single image does not fit (the error names the estimate)."""
    free = psutil.virtual_memory().available if available is None else available
    need = DENSITY_WORK_FACTOR * (density_bytes(n_qubits) if method == "density"
                                  else trajectory_bytes(n_qubits, trajectories))
    if need > MEMORY_FRACTION * free:
        if method == "density":
            what = (f"the density matrix of {n_qubits} qubits takes {density_bytes(n_qubits) / 2 ** 30:.2f} GiB per "
                    f"image (8 x 4^{n_qubits} bytes at complex64)")
        else:
            gib = trajectory_bytes(n_qubits, trajectories) / 2 ** 30
            what = f"{trajectories} trajectories of {n_qubits} qubits take {gib:.2f} GiB per image"
        raise UserInputError("noise_method", f"{what}, x{DENSITY_WORK_FACTOR} working copies = {need / 2 ** 30:.2f} "
                             f"GiB against {free / 2 ** 30:.1f} GiB available", "|".join(NOISE_METHODS) +
                             " with a circuit whose state fits in memory (trajectories for wide circuits)")


def graph_bytes(n_qubits: int, steps: int) -> int:
    """What autograd keeps of one image's density-matrix simulation: every step's density (complex64)."""
    return density_bytes(n_qubits) * (steps + 1)


def check_graph_memory(n_qubits: int, steps: int, available: int | None = None) -> None:
    """Refuse, before the work, a differentiated simulation whose single image's graph does not fit (an
    attack or noise-aware training through a wide, deep circuit), rather than die of the memory it needs."""
    free = psutil.virtual_memory().available if available is None else available
    need = graph_bytes(n_qubits, steps)
    if need > MEMORY_FRACTION * free:
        raise UserInputError("noise_method", f"differentiating the density matrix of {n_qubits} qubits through "
                             f"{steps} gate steps keeps {need / 2 ** 30:.2f} GiB per image against "
                             f"{free / 2 ** 30:.1f} GiB available", "a narrower or shallower circuit for "
                             "gradients under noise (robust accuracy under noise, train_noise), or trajectories")


def graph_chunk_images(n_qubits: int, steps: int) -> int:
    """Images per chunk when autograd keeps the steps: one chunk's graph near ``CHUNK_BYTES``. Each chunk is
    checkpointed (recomputed in the backward pass), so only one chunk's graph lives at a time."""
    return max(1, CHUNK_BYTES // graph_bytes(n_qubits, steps))


def _needs_graph(layer: QuantumLayer, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in layer.parameters()))


def chunk_images(n_qubits: int, method: str, trajectories: int = DEFAULT_TRAJECTORIES) -> int:
    """Images per chunk so that one chunk's working set stays near ``CHUNK_BYTES`` (at least one image)."""
    per_image = density_bytes(n_qubits) if method == "density" else trajectory_bytes(n_qubits, trajectories)
    return max(1, CHUNK_BYTES // (DENSITY_WORK_FACTOR * per_image))


def check_settings(cfg: RunConfig) -> str:
    """The noise fields checked before any work (a bad one raises UserInputError, exit code 2): the syntax of
    ``noise``, ``noise_sweep`` and ``train_noise``, a device's name and width, the memory of the chosen method
    at the run's width. Returns a line to print when noise is asked for but no arm has a circuit ('' otherwise)."""
    specs = {"noise": parse_noise(cfg.noise), "train_noise": parse_noise(cfg.train_noise, "train_noise")}
    sweep = parse_sweep(cfg.noise_sweep)
    asked = [name for name, spec in specs.items() if not spec.is_none] + (["noise_sweep"] if sweep else [])
    if not asked:
        return ""
    if not any(arm_registry.get(arm).has_circuit for arm in cfg.arm_list):
        return ", ".join(f"{name}={getattr(cfg, name)}" for name in asked) + ": no arm of this run has a circuit, " \
            "so noise has no effect"
    qubits = PAPER_QUBITS if cfg.protocol == "paper" else cfg.n_qubits  # the paper protocol fixes its width
    for name, spec in specs.items():
        if spec.device is not None:
            width = noise_device.load_backend(spec.device, name).num_qubits
            if qubits > width:
                raise UserInputError(name, f"the circuit has {qubits} qubits, {spec.device} only {width}",
                                     f"a device with at least {qubits} qubits")
        elif not spec.is_none:
            check_memory(qubits, choose_method(qubits, cfg.noise_method), cfg.noise_trajectories)
    return ""


def training_noise(model: nn.Module, cfg: RunConfig, seed: int) -> tuple[contextlib.AbstractContextManager, str]:
    """(the context ``fit`` runs in, the ``hqcbench.train_noise`` tag or ''): under ``train_noise`` every
    QuantumLayer computes noisy in training and validation passes (noise-aware training, exact through the
    density matrix where it fits); a circuit the engine does not model trains noiseless, and the tag says so."""
    spec = parse_noise(cfg.train_noise, "train_noise")
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer)]
    if spec.is_none or not layers:
        return contextlib.nullcontext(), ""
    foreign = [f"{path} ({type(m).__name__})" for path, m in quantum_submodules(model)
               if not isinstance(m, QuantumLayer)]
    if foreign:
        return contextlib.nullcontext(), "not modelled: " + ", ".join(foreign)
    width = (layers[0].n_qubits if spec.device is None
             else noise_device.device_program(layers[0], spec.device).n_active)
    method = choose_method(width, cfg.noise_method)
    label = f"trajectories (K={cfg.noise_trajectories})" if method == "trajectories" else method
    return noisy_layers(model, spec, cfg.noise_method, cfg.noise_trajectories, seed), f"{spec.text()}; {label}"


# ----------------------------------------------------------------------------------------- the layer under noise
def logical_steps(layer: QuantumLayer, x: torch.Tensor, depolarizing: float, dtype: torch.dtype,
                  ideal_loading: bool = False) -> list[Step]:
    """The layer's own circuit for images ``x``, each gate followed by depolarizing_error(P, k); with
    ``ideal_loading`` the encoding's gates (the first ``encoding_op_count``) get none (an idealisation)."""
    params = parameter_values(layer, x)
    free = encoding_op_count(layer.n_qubits, layer.encoding) if ideal_loading else 0
    return [Step(op.wires, op_matrix(op, params, dtype), 0.0 if index < free else depolarizing)
            for index, op in enumerate(layer_ops(layer))]


def _device_steps(program: "noise_device.DeviceProgram", layer: QuantumLayer, x: torch.Tensor, dtype: torch.dtype
                  ) -> list[Step]:
    params = parameter_values(layer, x)
    return [Step(wires, u, 0.0, kraus) for wires, u, kraus in program.gates(params, dtype)]


def noiseless_expvals(layer: QuantumLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's own forward pass (the class's, whatever an evaluation installed on the instance)."""
    return QuantumLayer.forward(layer, x)


def layer_shots(layer: QuantumLayer) -> int | None:
    """The shots the layer reads out with now (``train_shots`` in training mode, ``shots`` in eval mode)."""
    return layer.train_shots if layer.training else layer.shots


def noisy_expvals(layer: QuantumLayer, x: torch.Tensor, spec: NoiseSpec, method: str = "auto",
                  trajectories: int = DEFAULT_TRAJECTORIES, generator: torch.Generator | None = None
                  ) -> NoisyResult:
    """(B, n) <Z_w> of the layer's circuit on images ``x`` under ``spec``.

    No gate error (``none``, ``readout:P``, ``depolarizing:0``): the noiseless layer (its own finite-shot
    readout included), then the readout map; with readout errors and shots, the noiseless distribution is
    sampled after the bit flips instead. Otherwise the logical circuit (depolarizing) or the device's
    transpiled circuit, by ``method`` (``auto``: density while it fits), over the active qubits, in chunks
    of images; each logical qubit is read from its final physical qubit through its readout error, and
    with shots the <Z> are sampled from that distribution.
    """
    n, shots = layer.n_qubits, layer_shots(layer)
    if spec.gate_noise_free and (not spec.readout or shots is None):
        values = noiseless_expvals(layer, x)
        if spec.readout:
            values = ReadoutMap.symmetric(spec.readout, n)(values)
        return NoisyResult(values, "noiseless")
    dtype = complex_dtype(x.dtype)
    flip = torch.full((n,), float(spec.readout or 0.0), dtype=torch.float64)
    flips = (flip, flip)
    build: Callable[[torch.Tensor], list[Step]]
    if spec.device is not None:
        program = noise_device.device_program(layer, spec.device)
        n_sim, wires = program.n_active, list(program.logical_wires)
        flips = program.readout_flips()
        build = lambda part: _device_steps(program, layer, part, dtype)  # noqa: E731
    else:
        n_sim, wires = n, list(range(n))
        p = float(spec.depolarizing or 0.0)
        build = lambda part: logical_steps(layer, part, p, dtype, spec.ideal_loading)  # noqa: E731
    chosen = "noiseless" if spec.gate_noise_free else choose_method(n_sim, method)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    parts, errors = [], []
    if chosen == "noiseless":  # readout errors with shots: the exact distribution, flipped, then sampled
        parts.append(QuantumLayer.probabilities(layer, x))
    else:
        check_memory(n_sim, chosen, trajectories)
        graph = chosen == "density" and _needs_graph(layer, x)
        size = chunk_images(n_sim, chosen, trajectories)
        if graph:  # autograd keeps every step's density: size the chunks by the graph, recompute in backward
            steps = len(build(x[:1]))
            check_graph_memory(n_sim, steps)
            size = graph_chunk_images(n_sim, steps)
        for part in x.split(size):
            if chosen == "density":
                def density(chunk: torch.Tensor) -> torch.Tensor:
                    return marginal(density_probs(build(chunk), n_sim, chunk.shape[0], dtype, x.device), wires, n_sim)
                parts.append(checkpoint(density, part, use_reentrant=False) if graph else density(part))
                continue
            per_trajectory = trajectory_probs(build(part), n_sim, part.shape[0], trajectories, gen, dtype, x.device)
            z = per_trajectory @ z_sign_table(n_sim, x.device, per_trajectory.dtype)[:, wires]
            errors.append(mean_and_error(z)[1])
            parts.append(marginal(per_trajectory.mean(dim=1), wires, n_sim))
    probs = confuse(torch.cat(parts), *flips)
    zsigns = z_sign_table(n, x.device, probs.dtype)
    values = (probs @ zsigns).to(real_dtype(x.dtype))
    if shots is not None:  # sampled from the noisy distribution; the gradient stays the exact noisy one
        rng = layer_rng(cast(CircuitLayer, layer))  # it is one; nn.Module types its buffers as Tensor | Module
        sampled = sample_expvals(probs, zsigns, shots, rng).to(values)
        values = values + (sampled - values).detach()
    scale = ReadoutMap.from_flips(*flips).scale
    stderr = torch.cat(errors) * scale.abs().to(values) if errors else None
    return NoisyResult(values, chosen, stderr)


@contextlib.contextmanager
def noisy_layers(model: nn.Module, spec: NoiseSpec, method: str = "auto", trajectories: int = DEFAULT_TRAJECTORIES,
                 seed: int = 0) -> Iterator[set[str]]:
    """Every ``QuantumLayer`` of ``model`` computes under ``spec`` inside the block; yields the set of methods
    used (filled as forward passes run). The instance's own forward is restored on exit, so nothing of the
    noise survives into training or selection."""
    layers = [m for m in model.modules() if isinstance(m, QuantumLayer)]
    used: set[str] = set()
    generator = torch.Generator().manual_seed(int(seed))

    def noisy_forward(layer: QuantumLayer) -> Callable[[torch.Tensor], torch.Tensor]:
        def forward(x: torch.Tensor) -> torch.Tensor:
            layer._check(x)
            result = noisy_expvals(layer, x, spec, method, trajectories, generator)
            used.add(result.method)
            return result.values.to(x.dtype)
        return forward

    for layer in layers:
        setattr(layer, "forward", noisy_forward(layer))  # an instance attribute: nn.Module calls it
    try:
        yield used
    finally:
        for layer in layers:
            del layer.forward
