"""MLflow "model from code": the file MLflow runs to load an hqcbench classifier (see jobs.checkpoints).

MLflow copies this file into every logged model and executes it on ``mlflow.pyfunc.load_model``;
``load_context`` rebuilds the architecture from ``build.json`` and loads ``state_dict.pt``, so no
pickled object is ever stored. ``predict`` takes images in [0, 1], shape (N, C, H, W), and returns
logits (N, classes).
"""
from __future__ import annotations

import numpy as np
import torch
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class HqcbenchClassifier(PythonModel):
    """Images in [0, 1], shape (N, C, H, W) -> logits (N, classes)."""

    def load_context(self, context):
        # imported here, not at the top: MLflow executes this file on its own when it loads the model
        from hqcbench.jobs.checkpoints import rebuild

        self.model, self.build = rebuild(context.artifacts["build"], context.artifacts["state_dict"])

    # MLflow reads predict's input hint when the class is created: a missing hint warns on every
    # logged and loaded model (under MLflow's own "once" filter, which a caller cannot silence), a
    # list[...] hint turns on conversion of the input. np.ndarray is a hint it accepts as is.
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).numpy()


set_model(HqcbenchClassifier())
