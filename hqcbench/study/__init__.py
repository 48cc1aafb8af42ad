"""Studies: measurements about the models rather than comparisons of trained arms (``python -m hqcbench study``).

``scaling``: barren plateaus (gradient variance of the hybrid's circuit against qubits and depth)
and trained accuracy of hybrid and control against width. See docs/scaling.md.
"""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "accuracy", "gradients", "readme", "scaling", "settings", "summary",
]
