"""Jobs: the entry points that compose data, models, training, evaluation and tracking (run, tune)."""
