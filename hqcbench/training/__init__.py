"""Training: recipes (optimiser, schedule, augmentation), the fit / evaluate loop and the seed streams."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "loop", "recipes", "seeding",
]
