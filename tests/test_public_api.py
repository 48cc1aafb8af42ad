"""Each package's ``__all__`` lists its public API: every listed name resolves, and every public module of
the package is listed (jobs/pyfunc_model.py aside: MLflow executes that file itself)."""
import importlib
import pkgutil

import pytest

import hqcbench

PACKAGES = sorted(m.name for m in pkgutil.iter_modules(hqcbench.__path__, "hqcbench.") if m.ispkg)
NOT_LISTED = {"hqcbench.jobs": {"pyfunc_model"}}


def test_the_top_level_lists_the_lazy_benchmark():
    assert set(hqcbench.__all__) == {"__version__", "benchmark"}
    assert callable(hqcbench.benchmark)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_every_public_module_and_each_resolves(package):
    pkg = importlib.import_module(package)
    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")}
    assert sorted(pkg.__all__) == sorted(set(pkg.__all__)), f"{package}.__all__ repeats a name"
    assert set(pkg.__all__) == modules - NOT_LISTED.get(package, set()), f"{package}.__all__ out of step"
    for name in pkg.__all__:
        importlib.import_module(f"{package}.{name}")
