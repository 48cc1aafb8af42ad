"""The arm registry: the five built-in arms with the properties every stage reads from them.

Config, models, training, jobs and the report decide per arm only through these records, so a wrong
property here would change what an arm trains, searches or is fingerprinted by.
"""
from __future__ import annotations

import dataclasses

import pytest
from torch import nn

from hqcbench import arms
from hqcbench.arms import ArmSpec, Circuit, Middle, PaperRecipe, Role
from hqcbench.config import RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.jobs.fingerprint import training_fields
from hqcbench.models.arms import build_model


def test_the_registry_holds_exactly_the_five_builtin_arms():
    assert arms.names() == ("cnn", "hybrid", "control", "hybrid_noent", "hybrid_frozen")
    assert arms.circuit_arms() == ("hybrid", "hybrid_noent", "hybrid_frozen")
    assert (arms.CNN, arms.HYBRID, arms.CONTROL, arms.HYBRID_NOENT, arms.HYBRID_FROZEN) == arms.names()


def test_each_builtin_arm_has_its_middle_circuit_and_role():
    cnn, hybrid, control = arms.get("cnn"), arms.get("hybrid"), arms.get("control")
    noent, frozen = arms.get("hybrid_noent"), arms.get("hybrid_frozen")
    assert cnn.middle is Middle.NONE and cnn.circuit is None and cnn.role is Role.BASELINE
    assert control.middle is Middle.CLASSICAL and control.circuit is None and control.role is Role.TWIN
    assert hybrid.middle is Middle.CIRCUIT and hybrid.circuit == Circuit(entangle=True, trained=True)
    assert hybrid.role is Role.HYBRID
    assert noent.circuit == Circuit(entangle=False, trained=True) and noent.role is Role.ABLATION
    assert frozen.circuit == Circuit(entangle=True, trained=False) and frozen.role is Role.ABLATION
    recipes = [a.paper_recipe for a in (cnn, hybrid, control, noent, frozen)]
    assert recipes == [PaperRecipe.CNN] + [PaperRecipe.HYBRID] * 4
    assert all(not a.builder for a in (cnn, hybrid, control, noent, frozen))


def test_search_spaces_and_unused_fields():
    assert arms.get("cnn").search == ("width", "lr")
    assert arms.get("control").search == ("width", "lr", "n_qubits")
    for name in arms.circuit_arms():  # the ablations search exactly the hybrid's space
        assert arms.get(name).search == ("width", "lr", "n_qubits", "depth", "encoding", "ansatz")
        assert arms.get(name).unused_fields == ()
    assert set(arms.get("control").unused_fields) == set(arms.CIRCUIT_FIELDS)
    assert set(arms.get("cnn").unused_fields) == set(arms.CIRCUIT_FIELDS) | {"n_qubits", "encoding"}


def test_an_unknown_arm_names_the_known_ones():
    with pytest.raises(KeyError, match=r"arm 'qcnn': expected a built-in arm \(cnn, hybrid, control"):
        arms.get("qcnn")


def test_a_spec_is_consistent_and_a_name_is_registered_once():
    with pytest.raises(ValueError, match="circuit variant"):
        ArmSpec("x", Middle.CIRCUIT, Role.ABLATION, "a circuit arm without its variant")
    with pytest.raises(ValueError, match="module:callable"):
        ArmSpec("x", Middle.CLASSICAL, Role.ABLATION, "a builder without its callable", builder="mod")
    with pytest.raises(ValueError, match="already registered"):
        arms.register(arms.get("cnn"))


def _identity_core(spec: ArmSpec, k: int, n_qubits: int, *rest) -> nn.Module:
    """A middle core for the registered test arm: k -> n_qubits."""
    return nn.Linear(k, n_qubits)


def test_a_new_arm_is_one_register_call(monkeypatch):
    spec = ArmSpec("linear_twin", Middle.CLASSICAL, Role.ABLATION, "the control without its tanh",
                   search=("width", "lr", "n_qubits"), unused_fields=arms.CIRCUIT_FIELDS,
                   builder="tests.test_arms:_identity_core")
    monkeypatch.setitem(arms._REGISTRY, spec.name, spec)
    cfg = RunConfig(arms="cnn,linear_twin").validate()
    model = build_model("linear_twin", REGISTRY["digits"], cfg)
    assert isinstance(model.body[1][1], nn.Linear)
    assert "depth" not in training_fields(dataclasses.replace(cfg, depth=5), "linear_twin", 0)
