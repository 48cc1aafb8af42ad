"""benchmarks/quantum_layer.py's scale preset: the saved-for-backward counter, the fits-in-memory guard,
the targets, and small end-to-end runs (in process, in a child process, and a child that times out).

Nothing here needs PennyLane: the one check of the PennyLane engines skips when it is absent.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from hqcbench.models.quantum import QuantumLayer

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quantum_layer.py"
_spec = importlib.util.spec_from_file_location("quantum_layer_bench", BENCH)
ql = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ql)

FAST = ["--no-save", "--min-rounds", "1", "--max-rounds", "1", "--block", "1", "--budget-s", "0", "--threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch):
    """main() sets torch's thread count and OMP_NUM_THREADS: give both back after each test."""
    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", str(threads))
    yield
    torch.set_num_threads(threads)


def saved(layer: torch.nn.Module, x: torch.Tensor) -> int:
    _, nbytes = ql.count_saved_bytes(lambda: layer(x))
    return nbytes


# ------------------------------------------------------------------ saved-for-backward counter
def test_saved_bytes_of_a_known_graph():
    x = torch.randn(3, 4, requires_grad=True)
    y = torch.randn(3, 4, requires_grad=True)
    out, nbytes = ql.count_saved_bytes(lambda: x * y)
    assert nbytes == 2 * 12 * 4  # mul saves both factors
    out.sum().backward()  # the hooks pass the tensors through: the graph still differentiates
    torch.testing.assert_close(x.grad, y.detach())

    _, nbytes = ql.count_saved_bytes(lambda: x * x)  # one tensor saved twice: one storage
    assert nbytes == 12 * 4
    base = torch.randn(8, requires_grad=True)
    _, nbytes = ql.count_saved_bytes(lambda: base[:4] * base[4:])  # two views of one storage: counted once
    assert nbytes == 8 * 4
    big, w = torch.randn(100), torch.randn(2, requires_grad=True)
    _, nbytes = ql.count_saved_bytes(lambda: w * big[:2])  # a saved view keeps its whole storage alive
    assert nbytes == 100 * 4
    _, nbytes = ql.count_saved_bytes(lambda: (x * 2).detach())  # a product by a number saves nothing
    assert nbytes == 0


def test_fused_adjoint_saved_bytes_barely_grow_with_depth_while_torchquantum_grows_with_it():
    n, batch = 8, 64
    x = ql.cell_input(n, batch, "angle", torch.device("cpu"))
    state = batch * 2 ** n * 8  # one complex64 state vector of the batch
    fused = {d: saved(QuantumLayer(n, d, seed=0, diff_method="adjoint"), x) for d in (2, 8)}
    tq = {d: saved(ql.build("tq_dynamic", n, d, "angle", "strong", 4), x) for d in (2, 8)}
    # the adjoint keeps the final state; only the gates' small matrices grow with depth
    assert fused[8] < 2 * fused[2], fused
    assert fused[8] - fused[2] < state, fused
    # TorchQuantum keeps about one state per gate: 56 gates at depth 2, 200 at depth 8
    assert tq[8] > 3 * tq[2], tq
    assert tq[8] - tq[2] > 50 * state, tq
    assert fused[8] < tq[8] / 20


# ------------------------------------------------------------------ fits-in-memory guard
def test_the_guard_refuses_an_absurd_cell_and_admits_a_small_one():
    budget = int(20e9)
    estimate, message = ql.fits_message("fused", 30, 2, 32, budget)
    assert estimate > 100e9 and message == f"does not fit (estimate {estimate / 1e9:.1f} GB)"
    for engine in ("fused", "tq_dynamic", "pennylane", ql.LIGHTNING):
        assert ql.fits_message(engine, 4, 2, 4, budget)[1] is None, engine
    # TorchQuantum keeps a state per gate: 16 qubits, depth 6, batch 256 needs tens of GB; fused does not
    assert ql.fits_message("tq_dynamic", 16, 6, 256, budget)[1].startswith("does not fit")
    assert ql.fits_message("fused", 16, 6, 256, budget)[1] is None
    # the guard's TorchQuantum estimate lies above what it measurably keeps for backward
    x = ql.cell_input(6, 8, "angle", torch.device("cpu"))
    assert saved(ql.build("tq_dynamic", 6, 3, "angle", "strong", 4), x) < ql.estimate_bytes("tq_dynamic", 6, 3, 8)


def test_a_cell_that_does_not_fit_is_reported_and_not_run(capsys):
    assert ql.main(["--preset", "scale", "--qubits", "30", "--depths", "2", "--batches", "4", "--engines", "fused",
                    *FAST]) == 0
    text = capsys.readouterr().out
    assert "fused=does not fit (estimate" in text
    assert "(a) fused never slower than any other engine in any cell that ran: not measured" in text


# ------------------------------------------------------------------ targets
def _row(n, depth, batch, engine, status="ok", ms=math.nan, saved_mib=math.nan, lower_s=None, note=""):
    return {"n_qubits": n, "depth": depth, "batch": batch, "engine": engine, "status": status, "ms": ms,
            "calls": 3, "lower_s": lower_s, "saved_mib": saved_mib, "note": note}


def test_targets_met_not_met_and_not_measured():
    rows = [_row(16, 2, 32, "fused", ms=100.0), _row(16, 2, 32, "tq_dynamic", ms=500.0),
            _row(16, 2, 32, ql.LIGHTNING, status="timeout", lower_s=290.0),
            _row(16, 6, 32, "fused", ms=200.0, saved_mib=25.0),
            _row(16, 6, 32, "tq_dynamic", ms=900.0, saved_mib=3000.0),
            _row(16, 6, 32, ql.LIGHTNING, status="skipped", lower_s=290.0),
            _row(16, 2, 256, "fused", ms=800.0),
            _row(16, 2, 256, "tq_dynamic", status="nofit", note="does not fit (estimate 30.1 GB)")]
    a, b, c = ql.scale_targets(rows, ["fused", "tq_dynamic", ql.LIGHTNING])
    assert a.startswith("(a) fused never slower") and ": met (4 comparisons" in a
    assert ": met: 16/2/32: 5.0x" in b and "16/6/32: 4.5x" in b and "16/2/256: tq_dynamic does not fit" in b
    assert ": met (fused 25.0 MiB, tq_dynamic 3000.0 MiB" in c

    rows[1]["ms"] = 90.0  # tq_dynamic faster than fused in one cell
    rows[3]["saved_mib"] = 1000.0
    a, b, c = ql.scale_targets(rows, ["fused", "tq_dynamic", ql.LIGHTNING])
    assert ": NOT met: slower in tq_dynamic 90.0 vs fused 100.0 ms at 16/2/32" in a
    assert ": NOT met: 16/2/32: 0.9x" in b
    assert ": NOT met (fused 1000.0 MiB" in c

    a, b, c = ql.scale_targets([_row(12, 2, 32, "fused", ms=5.0)], ["fused"])
    assert a.endswith("not measured (no cell where fused and another engine both ran)")
    assert b.endswith("not measured (no 16-qubit cell in this run)")
    assert c.endswith("not measured (cell not in this run)")


# ------------------------------------------------------------------ end to end
def test_scale_smoke_run_in_process_prints_the_table_and_the_targets(capsys):
    assert ql.main(["--preset", "scale", "--qubits", "4", "--depths", "2", "--batches", "4",
                    "--engines", "fused", "tq_dynamic", "--no-memory", *FAST]) == 0
    text = capsys.readouterr().out
    assert "| 4 | 2 | 4 |" in text
    for label in ("(a) fused never slower", "(b) fused >= 3x faster than tq_dynamic at 16 qubits",
                  "(c) fused saved-for-backward bytes"):
        assert label in text
    assert "(b) fused >= 3x faster than tq_dynamic at 16 qubits: not measured" in text


def test_large_cells_run_in_a_child_and_a_timeout_stops_that_engine():
    args = ql.parse_args(["--preset", "scale", "--qubits", "3", "--depths", "1", "--batches", "2", "5",
                          "--engines", "fused", "--subprocess-qubits", "3", "--large-calls", "2",
                          "--cell-timeout-s", "600", *FAST])
    first, second = ql.run_scale(["fused"], args, torch.device("cpu"))
    assert first["status"] == "ok" and first["calls"] == 2 and first["ms"] > 0
    assert first["peak_mib"] >= 0 and first["saved_mib"] > 0
    assert second["status"] == "ok"

    args.cell_timeout_s = 0.05  # no process starts that fast: the first cell times out, the larger one is skipped
    first, second = ql.run_scale(["fused"], args, torch.device("cpu"))
    assert first["status"] == "timeout" and ql.time_text(first).startswith("timeout")
    assert second["status"] == "skipped" and "timed out at n=3 d=1 B=2" in second["note"]


def test_optional_engines_are_skipped_with_a_note_when_absent(monkeypatch):
    monkeypatch.setattr(ql, "pennylane_version", lambda: None)
    monkeypatch.setattr(ql, "lightning_version", lambda: None)
    notes = ql.missing_engines(["fused", "pennylane", ql.LIGHTNING])
    assert set(notes) == {"pennylane", ql.LIGHTNING}
    assert all("not installed" in note for note in notes.values())


def test_pennylane_engines_compute_the_fused_circuit():
    pytest.importorskip("pennylane")
    if ql.lightning_version() is None:
        pytest.skip("pennylane-lightning is not installed")
    x = ql.cell_input(3, 2, "angle", torch.device("cpu"))
    fused = ql.build("fused", 3, 2, "angle", "strong", 4)
    ref = ql.step(fused, x)
    ref_grad = x.grad.clone()
    for engine in ("pennylane", ql.LIGHTNING):
        out = ql.step(ql.build(engine, 3, 2, "angle", "strong", 4), x)
        torch.testing.assert_close(out.float(), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(x.grad.float(), ref_grad, atol=1e-5, rtol=0)
