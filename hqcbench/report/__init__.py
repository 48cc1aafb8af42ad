"""Reports: MLflow runs -> tables, intervals, verdicts per published claim, figures. No training code."""
