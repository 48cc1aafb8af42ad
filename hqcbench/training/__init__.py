"""Training: recipes (optimiser, schedule, augmentation), the fit / evaluate loop and the seed streams."""
