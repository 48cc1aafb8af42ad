"""Evaluation of trained models: attacks and their checks, finite-shot sweeps, hardware cost, resources."""
