"""MLflow "model from code": the file MLflow runs to load an hqcbench classifier (see jobs.checkpoints).

MLflow copies this file into every logged model and executes it on ``mlflow.pyfunc.load_model``;
``load_context`` rebuilds the architecture from ``build.json`` and loads ``state_dict.pt``, so no
pickled object is ever stored. ``predict`` takes images in [0, 1], shape (N, C, H, W), and returns
logits (N, classes).
"""
from __future__ import annotations

import warnings

import mlflow.pyfunc
import numpy as np
import torch
from mlflow.models import set_model


# MLflow checks predict's type hints when the class is created and warns when there are none; the
# hints it wants (list[...]) would make it validate and convert our arrays. Without them, no warning.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r".*type hints to the `predict` method.*")

    class HqcbenchClassifier(mlflow.pyfunc.PythonModel):
        # predict and load_context carry no type hints: MLflow reads predict's hints as an input schema
        # and warns on every logged model when they are not list[...] types
        def load_context(self, context):
            # imported here, not at the top: MLflow executes this file on its own when it loads the model
            from hqcbench.jobs.checkpoints import rebuild

            self.model, self.build = rebuild(context.artifacts["build"], context.artifacts["state_dict"])

        def predict(self, context, model_input, params=None):
            x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
            with torch.no_grad():
                return self.model(x).numpy()


set_model(HqcbenchClassifier())
