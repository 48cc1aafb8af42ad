"""Reports: MLflow runs -> tables, intervals, verdicts per published claim, figures. No training code."""

# the package's public API: its modules (it re-exports no names of its own)
__all__ = [
    "bottom_line", "build", "claim_tables", "claims", "contribution", "document", "epochs", "exports",
    "forest", "formatting", "judge", "labels", "load", "masking_gate", "noise", "plots", "practical",
    "provenance", "sources", "stats", "tables", "tuning", "user_models",
]
