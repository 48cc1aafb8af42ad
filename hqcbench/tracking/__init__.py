"""MLflow plumbing: parent and child runs, what evaluation steps hand over for logging, figures."""
