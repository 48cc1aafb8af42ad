"""MLflow plumbing: parent and child runs, what evaluation steps hand over for logging, figures."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "experiments", "figures", "findings", "runs", "stopping",
]
