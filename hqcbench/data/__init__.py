"""Data: the dataset registry, seeded splits and batch-wise augmentation. Imports nothing above it."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "augment", "datasets", "lineage", "user_data",
]
