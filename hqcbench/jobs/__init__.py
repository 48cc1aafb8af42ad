"""Jobs: the entry points that compose data, models, training, evaluation and tracking (run, tune)."""

# the package's public API: its modules (it re-exports no names of its own). pyfunc_model is left out:
# MLflow executes that file itself when it loads a model, and importing it registers the model class.
__all__ = [
    "campaign", "campaign_spec", "campaign_tuning", "checkpoints", "evaluate", "fingerprint", "headline",
    "liveness", "run", "store", "tune", "tune_space", "tune_storage",
]
