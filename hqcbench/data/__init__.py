"""Data: the dataset registry, seeded splits and batch-wise augmentation. Imports nothing above it."""
