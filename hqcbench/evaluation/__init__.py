"""Evaluation of trained models: attacks and their checks, finite-shot sweeps, hardware cost, resources."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "art_ext", "attack_table", "attacks", "bpda", "hardware_cost", "masking", "model_attacks", "noise",
    "paper_attack", "robustness", "shots_sweep", "stages", "worst_case",
]
