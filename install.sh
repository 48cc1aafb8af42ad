#!/usr/bin/env bash
# Installs hqcbench and its pinned dependencies into the active Python environment (a venv).
# Two pip steps because TorchQuantum 0.1.8 must go in with --no-deps: its declared dependencies
# pull TensorFlow, PySCF and qiskit<1.0 and still leave `import torchquantum` broken
# (see requirements-nodeps.txt). torch/torchvision come from local disk where pip finds them there.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
python -m pip install --quiet --disable-pip-version-check --no-deps -e .
python -c "import hqcbench, torchquantum, mlflow, art, optuna; print('hqcbench installed:', hqcbench.__version__)"
