"""The runner runs the phases of each pruner's pipeline, and every result records the pipeline, the taxonomy
and the training budget: after (dense model, search, finetune), before (RST: search on the random
initialisation with the from-scratch budget, no dense model), during (FlyingBird+, TwinRep: one sparse
training phase from scratch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baselines import get_pruner
from baselines.masking import raw_weight
from benchmark.config import SuiteConfig, build
from benchmark.config.budget import pipeline_phases
from benchmark.report.stats import budget_text, method_order
from benchmark.run.cells import finetune_parameters, load_data, run_cell
from benchmark.run.cost import cell_cost, pretrain_cost
from benchmark.run.dense import DenseCache
from benchmark.run.suite import run_suite
from benchmark.store.paths import result_path
from benchmark.store.results import write_result
from s2ap import build_pruner, list_methods
from tests.conftest import S2AP_ARM, cell_files, tiny_suite_dict, with_files

METHODS = ["hydra", "rst", {"method": "flyingbird+", "options": {"start": 0.0}}, "twinrep"]


class NoDense:
    """A dense cache that must not be asked: pipelines before and during start from a random initialisation."""

    def get(self, seed: int, *args):
        raise AssertionError("a before/during cell asked for the dense model")


@pytest.fixture(scope="module")
def suite() -> SuiteConfig:
    d = tiny_suite_dict(methods=METHODS)
    d["pretrain"] = {"epochs": 2, "lr": 0.05, "batch_size": 128}
    d["evaluation"] = {**d["evaluation"], "autoattack": "none"}
    return build(SuiteConfig, d)


@pytest.fixture(scope="module")
def results(suite: SuiteConfig, tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    torch.set_num_threads(1)
    data = load_data(suite)
    root = tmp_path_factory.mktemp("pipelines")
    out = {}
    for cell in suite.cells():
        dense = DenseCache(suite, root, data, torch.device("cpu"), False) if cell.method.method == "hydra" \
            else NoDense()
        result, masks = run_cell(cell, data, dense, torch.device("cpu"), progress=False)  # type: ignore[arg-type]
        path = result_path(cell, root)
        write_result(path, with_files(path, result))  # the schema accepts it
        out[cell.method.method] = (result, masks)
    return out


def test_each_pipeline_runs_its_phases(results) -> None:
    phases = {m: set(r["phases"]) - {"evaluate"} for m, (r, _) in results.items()}
    assert phases == {"hydra": {"pretrain", "search", "finetune"}, "rst": {"search"},
                      "flyingbird+": {"train"}, "twinrep": {"train"}}
    assert results["rst"][0]["phases"]["search"]["epochs"] == 2  # the from-scratch budget, not search.epochs
    assert results["rst"][0]["mask"]["sharpness"] is not None  # a score-based search: its mask figures
    assert results["twinrep"][0]["mask"] is None


def test_results_record_pipeline_taxonomy_and_budget(results, suite: SuiteConfig) -> None:
    n_train = len(load_data(suite).train)
    expected = {"hydra": ("after", {"pretrain": 2, "search": 2, "finetune": 1}),
                "rst": ("before", {"search": 2}),
                "flyingbird+": ("during", {"train": 2}),
                "twinrep": ("during", {"train": 2})}
    for method, (pipeline, epochs) in expected.items():
        r = results[method][0]
        assert r["cell"]["pipeline"] == pipeline and r["budget"]["pipeline"] == pipeline
        assert {k: v["epochs"] for k, v in r["budget"]["phases"].items()} == epochs
        assert r["budget"]["epochs"] == sum(epochs.values())
        assert r["budget"]["image_passes"] == sum(epochs.values()) * n_train
        assert set(r["taxonomy"]) == {"criterion", "scope", "schedule"}
    assert results["twinrep"][0]["taxonomy"] == {"criterion": "regularisation", "scope": "global",
                                                  "schedule": "one-shot"}
    assert budget_text(results["hydra"][0]) == f"P2+S2+F1 ep, {5 * n_train / 1000:.0f}k img"
    assert method_order([r for r, _ in results.values()]) == ["hydra", "rst", "flyingbird+", "twinrep"]


def test_a_recorded_budget_is_the_one_its_stored_config_gives(results) -> None:
    """The budget a result records equals the one derived from its stored config alone (what the tables show for
    results written before budgets were recorded), for every pipeline; the derivation reads no data."""
    from benchmark.config.budget import result_budget

    for method, (r, _) in results.items():
        old = {k: v for k, v in r.items() if k != "budget"}  # as a result from before the budget was recorded
        assert result_budget(old) == r["budget"], method
        assert budget_text(old) == budget_text(r) != "", method
    dense = {k: v for k, v in results["hydra"][0].items() if k != "budget"}
    dense["cell"] = {**dense["cell"], "method": "dense"}
    assert result_budget(dense) is None
    stale = {k: v for k, v in results["hydra"][0].items() if k != "budget"}
    assert result_budget({**stale, "config_hash": "0" * 16}) is None  # a config this code rebuilds differently


def test_during_cells_train_with_their_figures_and_meet_the_target(results) -> None:
    history = results["flyingbird+"][0]["history"]["train"]
    assert len(history) == 2
    for entry in history:
        assert {"train_robust_accuracy", "val_robust_accuracy", "val_robust_loss"} <= set(entry)
    assert "death_rate" in history[0]
    for method in ("flyingbird+", "twinrep"):
        r, masks = results[method]
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert kept == round(0.1 * total), method
        assert r["sparsity"]["achieved"] >= 1 - kept / total - 1e-9


def test_rst_keeps_its_signed_constant_weights(results) -> None:
    r, masks = results["rst"]
    for name, mask in masks.items():
        layer = r["sparsity"]["per_layer"][name]
        assert layer["n_zero"] == int((mask == 0).sum()), name  # no finetune: the ticket as found


def test_twinrep_weight_decay_acts_on_both_factors(suite: SuiteConfig) -> None:
    """The parameters the harness trains hold w and a, both under the optimizer's weight decay: with a zero
    loss gradient one SGD step scales each by (1 - lr * wd), so w * a by (1 - lr * wd)^2."""
    model = build_pruner("twinrep", 0.9)
    from benchmark.models import create_model

    net = create_model("mlp", 10, 1)
    model.attach(net)
    params = finetune_parameters(net, model)
    layer = net.get_submodule("1")
    w, a = raw_weight(layer), layer.parametrizations["weight"][0].aux
    assert any(p is w for p in params) and any(p is a for p in params)
    assert not any(p is model.layers["1"].scores for p in params)
    before = (w * a).detach().clone()
    opt = torch.optim.SGD(params, lr=0.1, weight_decay=2e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close((w * a).detach(), before * (1 - 0.1 * 2e-4) ** 2)


def test_phases_and_costs_follow_the_pipeline(suite: SuiteConfig) -> None:
    by_method = {c.method.method: c for c in suite.cells()}
    plans = {m: list(pipeline_phases(c, build_pruner(m, 0.9, **c.method.options))) for m, c in by_method.items()}
    assert plans == {"hydra": ["pretrain", "search", "finetune"], "rst": ["search"], "flyingbird+": ["train"],
                     "twinrep": ["train"]}
    assert list(pipeline_phases(by_method["rst"], build_pruner("rst", 0.9, finetune=True))) == ["search", "finetune"]
    for method in ("flyingbird+", "twinrep"):  # sparse training costs what the dense pretraining costs
        cost = cell_cost(by_method[method])
        assert cost.finetune == 0 and cost.search == pretrain_cost(suite) > 0
    rst = cell_cost(by_method["rst"])
    assert rst.finetune == 0 and rst.search == pretrain_cost(suite)


def test_awp_is_refused_for_sparse_training(tmp_path: Path) -> None:
    from benchmark.config import PhaseConfig, ThreatConfig
    from benchmark.models import create_model
    from benchmark.run.cells import sparse_training

    pruner = build_pruner("flyingbird", 0.9)
    net = create_model("mlp", 10, 1)
    pruner.attach(net)
    with pytest.raises(ValueError, match="AWP"):
        sparse_training(net, pruner, [], PhaseConfig(epochs=1, awp=True), ThreatConfig(), torch.device("cpu"))


def test_a_before_or_during_method_with_pretrain_awp_is_refused_before_anything_runs(capsys) -> None:
    from benchmark.cli import main

    for method in ("twinrep", "rst"):
        assert main(["run", "digits-quick", "--methods", method, "--set", "pretrain.awp=true", "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert "config field 'pretrain.awp'" in err and method in err and "\n" not in err.strip()


@pytest.mark.parametrize("method", ["flyingbird+", "twinrep"])
def test_an_interrupted_sparse_training_resumes_exactly(method: str, tmp_path: Path) -> None:
    """Killed after two of three epochs and resumed from its epoch checkpoint (model, optimizer, RNG, the
    pruner's own state), a run ends with the same masks and weights as one that was never interrupted."""
    from benchmark.config import PhaseConfig, ThreatConfig
    from benchmark.data import make_loader
    from benchmark.models import create_model
    from benchmark.run.cells import robust_figures, sparse_training
    from benchmark.train.loop import EpochCheckpoint

    threat, phase = ThreatConfig(eps="16/255", step_size="8/255", steps=1), PhaseConfig(epochs=3, batch_size=8)
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(16, 1, 8, 8, generator=gen),
                                          torch.randint(0, 10, (16,), generator=gen))

    def run(path: Path, stop_at: int | None = None):
        torch.manual_seed(0)
        model = create_model("mlp", 10, 1)
        pruner = build_pruner(method, 0.8, seed=0, **({"start": 0.0} if method == "flyingbird+" else {}))
        pruner.attach(model)
        loader = make_loader(data, 8, shuffle=True, seed=0)
        hook = pruner.end_training_epoch

        def end_epoch(epoch: int, figures: dict) -> dict:
            if epoch == stop_at:  # the process dies before this epoch's checkpoint is written
                raise KeyboardInterrupt
            return hook(epoch, figures)

        pruner.end_training_epoch = end_epoch  # type: ignore[method-assign]

        def figures() -> dict[str, float]:
            acc, loss = robust_figures(model, *data.tensors, threat, 2, 16, 0, torch.device("cpu"))
            return {"train_robust_accuracy": acc, "val_robust_accuracy": acc / 2, "val_robust_loss": loss}

        sparse_training(model, pruner, loader, phase, threat, torch.device("cpu"), figures,
                        checkpoint=EpochCheckpoint(path.parent, path, pruner.extra_state, pruner.load_extra_state))
        return pruner, model

    whole, whole_model = run(tmp_path / "whole.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut.pt", stop_at=2)
    resumed, resumed_model = run(tmp_path / "cut.pt")
    for (name, a), b in zip(whole_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert whole.extra_state().keys() == resumed.extra_state().keys()


def test_a_channel_suite_runs_every_structured_method_and_keeps_every_class(tmp_path: Path) -> None:
    """A whole channel-mode cell (search, finetune, evaluation with the live-channel sharpness) for every
    registered method that offers channel pruning: the stored classifier mask keeps every class row."""
    methods = [m for m in list_methods() if "channel" in get_pruner(m.split("+")[0]).granularities]
    assert {"hydra", "harp", "radmm", "twinrep", "rst", "hydra+s2ap"} <= set(methods)
    methods = [{**S2AP_ARM, "method": m} if m.endswith("+s2ap") else m for m in methods]
    suite = build(SuiteConfig, tiny_suite_dict(structure="channel", sparsities=[0.75], methods=methods,
                                               pretrain={"epochs": 0}, search={"epochs": 2, "batch_size": 256},
                                               finetune={"epochs": 1, "batch_size": 256},
                                               evaluation={"n_examples": 8, "autoattack": "none", "pgd_steps": 1,
                                                           "sharpness_examples": 8, "sharpness_iterations": 2}))
    run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)
    files = cell_files(tmp_path / "tiny")
    assert len(files) == len(methods)
    for path in files:
        result = json.loads(path.read_text())
        masks = load_file(tmp_path / "tiny" / result["mask_file"]["path"])
        head = masks[list(masks)[-1]]
        assert head.shape[0] == 10 and bool(head.any(1).all()), path.name  # every class keeps inputs
        assert result["config"]["classifier_unit"] == "input"
