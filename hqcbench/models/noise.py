"""The noise engine: hqcbench's circuit under gate and readout errors, batched over images.

Why its own engine: the noiseless layer (``hqcbench.models.quantum``) fuses gates and never holds a
mixed state; Qiskit Aer simulates noise exactly but one bound circuit per image. Here a circuit is a
list of ``Step`` s (a gate, per image or shared, and the error channel that follows it) and two
methods run it on every image at once:

* ``density`` -- the exact density matrix (R, 2**n, 2**n). A gate and its error are fused into one
  superoperator S = S_error @ (U kron conj U) acting on the (row bits, column bits) of its wires: one
  batched matmul per gate. Memory: 8 x 4**n bytes per image at complex64 (``density_bytes``), checked
  before the work starts and simulated in chunks of images (``chunk_images``).
* ``trajectories`` -- K Monte-Carlo state vectors per image (seeded): after each gate a depolarizing
  error picks one of the 4**k Paulis with probability P (identity included, which is Aer's channel
  exactly on average); a general channel (a device's) picks Kraus operator i with probability
  ||K_i psi||**2. The mean of <Z> over trajectories converges to the density matrix's, with a
  standard error the result carries. Memory grows as 2**n, for widths the density matrix cannot hold.

Readout errors are an affine map of each <Z> (a per-qubit confusion matrix), applied last
(``ReadoutMap``). ``depolarizing:0`` and ``readout:P`` alone have no gate error: they go through the
noiseless layer itself, so ``depolarizing:0`` equals the noiseless output bit for bit.

``noisy_layers`` swaps every ``QuantumLayer``'s forward for the noisy one while evaluation runs
(training and model selection never see noise). The logical circuit is ``noise_circuit``'s; a
device's transpiled circuit and calibrated errors come from ``noise_device`` (Qiskit, imported only
then).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

import psutil
import torch
from torch import nn

from hqcbench import arms as arm_registry
from hqcbench.config import DEFAULT_NOISE_TRAJECTORIES, RunConfig
from hqcbench.errors import UserInputError
from hqcbench.models import noise_device
from hqcbench.models.circuit import complex_dtype, real_dtype, z_sign_table
from hqcbench.models.noise_circuit import layer_ops, op_matrix, parameter_values
from hqcbench.models.noise_spec import NOISE_METHODS, NoiseSpec, parse_noise, parse_sweep
from hqcbench.models.quantum import QuantumLayer
from hqcbench.models.twin import quantum_submodules

DEFAULT_TRAJECTORIES = DEFAULT_NOISE_TRAJECTORIES
DENSITY_WORK_FACTOR = 4  # the state, its moved copy, the product and the next step's input
CHUNK_BYTES = 256 * 2 ** 20  # working memory of one chunk of images (both methods)
MEMORY_FRACTION = 0.5  # of the available memory: one image's density matrix beyond it is refused
AUTO_DENSITY_MAX_BYTES = 64 * 2 ** 20  # auto picks the density matrix while one image's fits this (n <= 11)


@dataclass
class Step:
    """One gate on ``wires`` (first wire = most significant bit of its matrix) and the error after it.

    unitary: (d, d) shared or (R, d, d) per row. depolarizing: Aer's depolarizing_error(P, k) on the same
    wires; kraus: (m, d, d) a general channel (a device's calibrated error); both may be absent.
    """

    wires: tuple[int, ...]
    unitary: torch.Tensor
    depolarizing: float = 0.0
    kraus: torch.Tensor | None = None


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
    for name, spec in specs.items():
        if spec.device is not None:
            width = noise_device.load_backend(spec.device, name).num_qubits
            if cfg.protocol != "paper" and cfg.n_qubits > width:  # the paper protocol fixes its own width
                raise UserInputError(name, f"the circuit has {cfg.n_qubits} qubits, {spec.device} only {width}",
                                     f"a device with at least {cfg.n_qubits} qubits")
        elif not spec.is_none:
            check_memory(cfg.n_qubits, choose_method(cfg.n_qubits, cfg.noise_method), cfg.noise_trajectories)
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


# ----------------------------------------------------------------------------------------- channels
def _apply(tensor: torch.Tensor, matrix: torch.Tensor, axes: list[int]) -> torch.Tensor:
    """Contract ``matrix`` ((D, D) shared or (R, D, D) per row, D = 2**len(axes)) with the given bit axes of
    ``tensor`` (R, 2, ..., 2); the axes' first is the matrix's most significant bit."""
    rows, k = tensor.shape[0], len(axes)
    front = list(range(1, k + 1))
    moved = tensor.movedim(axes, front)
    out = torch.matmul(matrix, moved.reshape(rows, 2 ** k, -1))
    return out.reshape(moved.shape).movedim(front, axes)


def _unitary_superop(u: torch.Tensor) -> torch.Tensor:
    """U rho U^dagger as a matrix on (row bits, column bits): kron(U, conj U), per row where U is."""
    d = u.shape[-1]
    return (u[..., :, None, :, None] * u.conj()[..., None, :, None, :]).reshape(*u.shape[:-2], d * d, d * d)


def depolarizing_superop(p: float, k: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """Aer's depolarizing_error(p, k): rho -> (1 - p) rho + p Tr(rho) I / 2**k, on (row bits, column bits)."""
    d = 2 ** k
    vec_identity = torch.eye(d, dtype=dtype, device=device).reshape(-1)
    return (1 - p) * torch.eye(d * d, dtype=dtype, device=device) + p / d * torch.outer(vec_identity, vec_identity)


def kraus_superop(kraus: torch.Tensor) -> torch.Tensor:
    """sum_i kron(K_i, conj K_i) of (m, d, d) Kraus operators."""
    return _unitary_superop(kraus).sum(dim=0)


def step_superop(step: Step, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    s = _unitary_superop(step.unitary.to(device, dtype))
    k = len(step.wires)
    if step.depolarizing:
        s = depolarizing_superop(step.depolarizing, k, dtype, device) @ s
    if step.kraus is not None:
        s = kraus_superop(step.kraus.to(device, dtype)) @ s
    return s


# ----------------------------------------------------------------------------------------- methods
def density_expvals(steps: list[Step], n_qubits: int, rows: int, dtype: torch.dtype, device: torch.device
                    ) -> torch.Tensor:
    """(rows, n) exact <Z_w> of |0..0> run through ``steps`` as a density matrix."""
    dim = 2 ** n_qubits
    rho = torch.zeros(rows, dim * dim, dtype=dtype, device=device)
    rho[:, 0] = 1
    rho = rho.reshape(rows, *([2] * (2 * n_qubits)))
    for step in steps:
        axes = [1 + w for w in step.wires] + [1 + n_qubits + w for w in step.wires]
        rho = _apply(rho, step_superop(step, dtype, device), axes)
    probs = rho.reshape(rows, dim, dim).diagonal(dim1=-2, dim2=-1).real
    return probs @ z_sign_table(n_qubits, device, probs.dtype)


@lru_cache(maxsize=8)
def pauli_table(k: int) -> torch.Tensor:
    """(4**k, 2**k, 2**k) complex128: every k-qubit Pauli string, index digit i (base 4) = wire i's I, X, Y, Z."""
    single = torch.tensor([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]],
                          dtype=torch.complex128)
    out = single
    for _ in range(k - 1):
        out = torch.stack([torch.kron(a, b) for a in out for b in single])
    return out


def _kraus_jump(psi: torch.Tensor, kraus: torch.Tensor, axes: list[int], generator: torch.Generator) -> torch.Tensor:
    """One trajectory step of a general channel: Kraus operator i with probability ||K_i psi||**2, renormalised."""
    rows, m, d = psi.shape[0], kraus.shape[0], kraus.shape[-1]
    front = list(range(1, len(axes) + 1))
    moved = psi.movedim(axes, front)
    branches = torch.matmul(kraus.reshape(m * d, d), moved.reshape(rows, d, -1)).reshape(rows, m, d, -1)
    weights = branches.real.square().sum((2, 3)) + branches.imag.square().sum((2, 3))  # (rows, m)
    choice = torch.multinomial(weights.detach().cpu().double().clamp_min(0), 1, generator=generator).squeeze(1)
    picked = torch.arange(rows, device=psi.device)
    chosen = branches[picked, choice.to(psi.device)] / weights[picked, choice.to(psi.device)].sqrt()[:, None, None]
    return chosen.reshape(moved.shape).movedim(front, axes)


def trajectory_expvals(steps: list[Step], n_qubits: int, rows: int, trajectories: int, generator: torch.Generator,
                       dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, standard error), each (rows, n): <Z_w> over ``trajectories`` sampled state vectors per row."""
    total = rows * trajectories
    psi = torch.zeros(total, 2 ** n_qubits, dtype=dtype, device=device)
    psi[:, 0] = 1
    psi = psi.reshape(total, *([2] * n_qubits))
    for step in steps:
        u = step.unitary.to(device, dtype)
        if u.dim() == 3:  # one matrix per image -> the same for each of its trajectories
            u = u.repeat_interleave(trajectories, dim=0)
        axes = [1 + w for w in step.wires]
        if step.depolarizing:
            k = len(step.wires)
            hit = torch.rand(total, generator=generator) < step.depolarizing
            which = torch.randint(4 ** k, (total,), generator=generator) * hit
            u = pauli_table(k).to(device, dtype)[which.to(device)] @ u
        psi = _apply(psi, u, axes)
        if step.kraus is not None:
            psi = _kraus_jump(psi, step.kraus.to(device, dtype), axes, generator)
    probs = (psi.real.square() + psi.imag.square()).reshape(total, -1)
    z = (probs @ z_sign_table(n_qubits, device, probs.dtype)).reshape(rows, trajectories, n_qubits)
    std = z.std(dim=1) if trajectories > 1 else torch.zeros_like(z[:, 0])
    return z.mean(dim=1), std / math.sqrt(trajectories)


# ----------------------------------------------------------------------------------------- the layer under noise
def logical_steps(layer: QuantumLayer, x: torch.Tensor, depolarizing: float, dtype: torch.dtype) -> list[Step]:
    """The layer's own circuit for images ``x``, each gate followed by depolarizing_error(P, k)."""
    params = parameter_values(layer, x)
    return [Step(op.wires, op_matrix(op, params, dtype), depolarizing) for op in layer_ops(layer)]


def _device_steps(program: "noise_device.DeviceProgram", layer: QuantumLayer, x: torch.Tensor, dtype: torch.dtype
                  ) -> list[Step]:
    params = parameter_values(layer, x)
    return [Step(wires, u, 0.0, kraus) for wires, u, kraus in program.gates(params, dtype)]


def noiseless_expvals(layer: QuantumLayer, x: torch.Tensor) -> torch.Tensor:
    """The layer's own forward pass (the class's, whatever an evaluation installed on the instance)."""
    return QuantumLayer.forward(layer, x)


def noisy_expvals(layer: QuantumLayer, x: torch.Tensor, spec: NoiseSpec, method: str = "auto",
                  trajectories: int = DEFAULT_TRAJECTORIES, generator: torch.Generator | None = None
                  ) -> NoisyResult:
    """(B, n) <Z_w> of the layer's circuit on images ``x`` under ``spec``.

    No gate error (``none``, ``readout:P``, ``depolarizing:0``): the noiseless layer, then the readout map.
    Otherwise the logical circuit (depolarizing) or the device's transpiled circuit, by ``method``
    (``auto``: density while it fits), over the active qubits, in chunks of images; then each logical
    qubit's <Z> is read from its physical qubit through the readout map.
    """
    n = layer.n_qubits
    if spec.gate_noise_free:
        values = noiseless_expvals(layer, x)
        if spec.readout:
            values = ReadoutMap.symmetric(spec.readout, n)(values)
        return NoisyResult(values, "noiseless")
    dtype = complex_dtype(x.dtype)
    build: Callable[[torch.Tensor], list[Step]]
    if spec.device is not None:
        program = noise_device.device_program(layer, spec.device)
        n_sim, wires = program.n_active, list(program.logical_wires)
        readout = ReadoutMap.from_flips(*program.readout_flips())
        build = lambda part: _device_steps(program, layer, part, dtype)  # noqa: E731
    else:
        n_sim, wires = n, list(range(n))
        readout = ReadoutMap.symmetric(spec.readout or 0.0, n)
        p = float(spec.depolarizing or 0.0)
        build = lambda part: logical_steps(layer, part, p, dtype)  # noqa: E731
    chosen = choose_method(n_sim, method)
    check_memory(n_sim, chosen, trajectories)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    means, errors = [], []
    for part in x.split(chunk_images(n_sim, chosen, trajectories)):
        steps = build(part)
        if chosen == "density":
            means.append(density_expvals(steps, n_sim, part.shape[0], dtype, x.device))
        else:
            mean, err = trajectory_expvals(steps, n_sim, part.shape[0], trajectories, gen, dtype, x.device)
            means.append(mean)
            errors.append(err)
    values = readout(torch.cat(means)[:, wires]).to(real_dtype(x.dtype))
    stderr = (torch.cat(errors)[:, wires] * readout.scale.abs().to(values)) if errors else None
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
