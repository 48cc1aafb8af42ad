"""Models: circuit math, the quantum layer and its finite-shot readout, shared blocks, the arms of both protocols."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "adjoint", "arms", "blocks", "circuit", "memory", "noise", "noise_circuit", "noise_device", "noise_sim",
    "noise_spec", "paper", "quantum", "readout", "twin", "user",
]
