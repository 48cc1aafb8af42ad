"""Models: the quantum layer, the backbones and the three arms (cnn, hybrid, control)."""
from hqcbench.models.arms import Classifier, build_model, count_parameters
from hqcbench.models.quantum import QuantumLayer

__all__ = ["Classifier", "QuantumLayer", "build_model", "count_parameters"]
