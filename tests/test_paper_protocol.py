"""The paper protocol reproduces the published procedure (docs/published_study.md): architectures and
their parameter counts, the recipes, augmentation, the 80/20 validation split, batch 64, and the tag that
marks a run shortened below the published 50 epochs."""
from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch

from hqcbench.config import PAPER_EPOCHS, RunConfig
from hqcbench.data.datasets import REGISTRY
from hqcbench.errors import UserInputError
from hqcbench.models.arms import build_model, count_parameters
from hqcbench.names import TAG_SHORTENED
from hqcbench.training.recipes import (
    effective_batch_size,
    effective_val_fraction,
    make_recipe,
    paper_augmentation,
    protocol_tags,
    shortened_note,
)


def _model(arm: str, dataset: str = "mnist"):
    torch.manual_seed(0)
    return build_model(arm, REGISTRY[dataset], RunConfig(dataset=dataset, protocol="paper"))


def test_mnist_parameter_counts_are_the_published_ones():
    hybrid, cnn = count_parameters(_model("hybrid")), count_parameters(_model("cnn"))
    assert hybrid["params_total"] == 142_530
    assert cnn["params_total"] == 151_754
    assert hybrid["params_quantum"] == 8  # 2 BasicEntanglerLayers x 4 wires, one RX angle each
    # control: the circuit (8 weights) replaced by Linear(16 -> 4) (68 weights)
    assert count_parameters(_model("control"))["params_total"] == 142_530 - 8 + 16 * 4 + 4


def test_stl10_hybrid_is_larger_than_its_cnn():
    """The design notes 4.6 M vs 1.7 M parameters on STL-10 (the 'fewer parameters' claim leaves it out)."""
    hybrid = count_parameters(_model("hybrid", "stl10"))["params_total"]
    cnn = count_parameters(_model("cnn", "stl10"))["params_total"]
    assert round(hybrid / 1e6, 1) == 4.6 and round(cnn / 1e6, 1) == 1.7


def test_mnist_hybrid_architecture_matches_the_design():
    body = _model("hybrid").body
    convs = [m for m in body if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in body if isinstance(m, torch.nn.Linear)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 16), (16, 32)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(512, 256), (256, 16), (4, 128), (128, 10)]
    assert any(isinstance(m, torch.nn.Softmax) for m in body)
    quantum = _model("hybrid").quantum_layers()[0]
    assert (quantum.n_qubits, quantum.depth, quantum.encoding, quantum.ansatz) == (4, 2, "amplitude", "basic")
    assert [m.p for m in body if isinstance(m, torch.nn.Dropout)] == [0.3]


def _recipe(arm: str, epochs: int = 3, steps: int = 10):
    model = _model(arm)
    return make_recipe("paper", arm, model, lr=0.5, epochs=epochs, steps_per_epoch=steps, dataset="mnist",
                       mean=REGISTRY["mnist"].mean)


def test_hybrid_and_control_recipe_is_the_published_one_scaled_to_the_epochs_run():
    for arm in ("hybrid", "control"):
        recipe = _recipe(arm, epochs=3, steps=10)
        opt, sched = recipe.optimizer, recipe.scheduler
        assert isinstance(opt, torch.optim.AdamW) and opt.defaults["weight_decay"] == 0.01
        assert isinstance(sched, torch.optim.lr_scheduler.OneCycleLR) and sched.total_steps == 30
        assert recipe.step_per_batch and recipe.grad_clip == 1.0 and recipe.augment_val
        assert recipe.criterion.label_smoothing == pytest.approx(0.1)
        lrs = []
        for _ in range(30):  # one step per batch over the whole (shortened) run
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        assert max(lrs) == pytest.approx(2e-3, rel=0.02)
        assert int(np.argmax(lrs)) + 1 == 0.3 * 30 - 1  # OneCycleLR peaks after pct_start * total_steps - 1 steps
        assert min(lrs[-3:]) < 1e-7 and lrs[-1] < 2e-5  # annealed to ~0 at the end of the run actually made


def test_cnn_recipe_restarts_every_five_batches_as_published():
    recipe = _recipe("cnn")
    opt, sched = recipe.optimizer, recipe.scheduler
    assert type(opt) is torch.optim.Adam and opt.defaults["lr"] == 3e-3 and opt.defaults["weight_decay"] == 5e-3
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingWarmRestarts)
    assert recipe.step_per_batch and recipe.grad_clip is None
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == lrs[5] == lrs[10] == pytest.approx(3e-3)  # a restart every 5 *batches*
    assert lrs[4] < lrs[1] < lrs[0]


def test_mnist_augmentation_fills_with_the_mean():
    """Published order: Normalize, then RandomAffine (fill 0 in normalised space = the mean in pixels)."""
    aug = paper_augmentation("mnist", REGISTRY["mnist"].mean)
    assert (aug.rotate_deg, aug.translate) == (5.0, 0.1)
    flat = torch.full((8, 1, 28, 28), REGISTRY["mnist"].mean[0])
    out = aug(flat, torch.Generator().manual_seed(0))
    assert torch.allclose(out, flat, atol=1e-6)
    assert paper_augmentation("cifar100", (0.5, 0.5, 0.5)).pad_crop == 4
    assert paper_augmentation("stl10", (0.5, 0.5, 0.5)).pad_crop == 8


def test_paper_fixes_batch_and_split_and_tags_shortened_runs():
    cfg = RunConfig(dataset="mnist", protocol="paper", epochs=3, batch_size=7, val_fraction=0.5)
    assert effective_batch_size(cfg) == 64 and effective_val_fraction(cfg) == 0.2
    assert protocol_tags(cfg) == {TAG_SHORTENED: "ran 3 of the published 50 epochs"}
    assert shortened_note("paper", PAPER_EPOCHS) is None and shortened_note("fair", 3) is None
    assert protocol_tags(RunConfig()) == {}
    fair = RunConfig(batch_size=7, val_fraction=0.5)
    assert effective_batch_size(fair) == 7 and effective_val_fraction(fair) == 0.5


def test_paper_on_other_datasets_is_a_clear_error():
    with pytest.raises(UserInputError) as info:
        RunConfig(dataset="digits", protocol="paper").validate()
    assert info.value.parameter == "protocol" and "mnist" in str(info.value)


@pytest.mark.slow
def test_shortened_paper_run_end_to_end(mlflow_store, tmp_path):
    """Tiny MNIST-format files, 1 epoch: children carry the shortened tag, the 80/20 split and the counts."""
    from hqcbench.jobs.run import run_main
    from tests.dataset_files import write_mnist_like

    write_mnist_like(tmp_path / "data", "MNIST", n_train=200, n_test=40)
    cfg = RunConfig(dataset="mnist", protocol="paper", epochs=1, val_fraction=0.5, attacks="none",
                    data_dir=str(tmp_path / "data"))
    trained = run_main(cfg, progress=False)
    assert {t.arm for t in trained} == {"cnn", "hybrid", "control"}
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'child'")
    assert set(runs[f"tags.{TAG_SHORTENED}"]) == {"ran 1 of the published 50 epochs"}
    assert set(runs["params.n_val"]) == {"40"} and set(runs["params.n_train"]) == {"160"}
    counts = dict(zip(runs["tags.hqcbench.arm"], runs["metrics.params_total"]))
    assert counts["hybrid"] == 142_530 and counts["cnn"] == 151_754
    recipes = dict(zip(runs["tags.hqcbench.arm"], runs["tags.hqcbench.recipe"]))
    assert "OneCycleLR" in recipes["hybrid"] and "OneCycleLR" in recipes["control"]
    assert "WarmRestarts" in recipes["cnn"]
    parent = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`hqcbench.kind` = 'main'")
    assert parent[f"tags.{TAG_SHORTENED}"].iloc[0] == "ran 1 of the published 50 epochs"


def test_mnist_augmentation_shifts_like_torchvision_random_affine():
    """Same whole-pixel shift and nearest interpolation as torchvision's RandomAffine: with rotation
    off, our batch-wise warp of a shift equals torchvision's affine() with that integer translation."""
    import dataclasses

    import torch
    import torchvision.transforms.functional as TF

    aug = dataclasses.replace(paper_augmentation("mnist", (0.0,)), rotate_deg=0.0)
    assert aug.nearest and aug.whole_pixel_shift
    image = torch.rand(1, 1, 28, 28)
    gen = torch.Generator().manual_seed(3)
    ours = aug(image, gen)
    gen = torch.Generator().manual_seed(3)
    draws = torch.rand(1, generator=gen), torch.rand(1, generator=gen), torch.rand(1, generator=gen)
    tx = int(torch.round((draws[1] * 0.2 - 0.1) * 28))
    ty = int(torch.round((draws[2] * 0.2 - 0.1) * 28))
    theirs = TF.affine(image, angle=0.0, translate=[-tx, -ty], scale=1.0, shear=[0.0],
                       interpolation=TF.InterpolationMode.NEAREST, fill=0.0)
    assert (tx, ty) != (0, 0)
    assert torch.equal(ours, theirs)
