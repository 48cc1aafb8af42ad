"""Models: circuit math, the quantum layer and its finite-shot readout, shared blocks, the arms of both protocols."""
