"""R-ADMM against references written here: the Euclidean projection onto k-sparse tensors (explicit sorting),
the Z/U updates and the rho schedule of the public code, the ADMM penalty and its gradient, and the final
per-layer magnitude prune."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from baselines import get_pruner
from baselines.masking import current_masks, raw_weight
from baselines.radmm import Radmm, project


def reference_projection(v: np.ndarray, k: int, channels: bool | str) -> np.ndarray:
    """Keep the k entries of largest |v| (or the k rows of largest L2 norm, computed entry by entry; ``"input"``:
    the k input columns, the classifier's units in channel mode)."""
    if channels == "input":
        return np.swapaxes(reference_projection(np.ascontiguousarray(np.swapaxes(v, 0, 1)), k, True), 0, 1)
    out = np.zeros_like(v)
    if not channels:
        flat, keep = v.ravel(), np.argsort(-np.abs(v.ravel()), kind="stable")[:k]
        out.ravel()[keep] = flat[keep]
        return out
    norms = [np.sqrt(sum(float(x) ** 2 for x in row.ravel())) for row in v]
    for i in sorted(range(len(v)), key=lambda i: -norms[i])[:k]:
        out[i] = v[i]
    return out


def unit(granularity: str, name: str, names: list[str]) -> bool | str:
    """The reference's mode for a layer: the classifier (the last layer) is pruned by inputs in channel mode."""
    if granularity == "weight":
        return False
    return "input" if name == names[-1] else True


def units(w: np.ndarray | torch.Tensor, mode: bool | str) -> int:
    return w.shape[1] if mode == "input" else len(w)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))


def test_projection_keeps_the_largest_entries_or_channels() -> None:
    v = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(1))  # distinct values: no ties
    for keep, k_w, k_c in [(0.25, 18, 2), (0.5, 36, 3)]:
        np.testing.assert_array_equal(project(v, keep, "weight").numpy(), reference_projection(v.numpy(), k_w, False))
        np.testing.assert_array_equal(project(v, keep, "channel").numpy(), reference_projection(v.numpy(), k_c, True))
    # a projection: applying it twice changes nothing, and no other k-sparse tensor is closer
    z = project(v, 0.25, "weight")
    assert torch.equal(project(z, 0.25, "weight"), z)
    other = v * (torch.rand(v.shape, generator=torch.Generator().manual_seed(2)) < 0.25)
    assert (v - z).norm() <= (v - other).norm()


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_dual_update_and_rho_schedule_follow_the_public_order(granularity: str) -> None:
    model = tiny_model()
    pruner = get_pruner("radmm")(0.75, granularity=granularity, rho=0.01, rho_growth=1.3, admm_every=2)
    pruner.attach(model)
    names = list(pruner.layers)
    weights = {n: raw_weight(model.get_submodule(n)) for n in names}
    # at the start: Z = proj(W), U = 0, and the network is dense
    for n in names:
        w = weights[n].detach().numpy()
        mode = unit(granularity, n, names)
        k = round(0.25 * (w.size if granularity == "weight" else units(w, mode)))
        np.testing.assert_array_equal(pruner.Z[n].numpy(), reference_projection(w, k, mode))
        assert not pruner.U[n].any()
    assert all(bool(m.all()) for m in current_masks(model).values())
    expected_rho, u = 0.01, {n: torch.zeros_like(weights[n]) for n in names}
    for epoch in range(6):
        with torch.no_grad():  # stands in for an epoch of training
            for w in weights.values():
                w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(epoch)))
        log = pruner.end_search_epoch(epoch)
        if epoch in (1, 3, 5):  # every admm_every = 2 epochs: rho grows first, then Z and U
            expected_rho *= 1.3
            for n in names:
                w = weights[n].detach()
                mode = unit(granularity, n, names)
                k = round(0.25 * (w.numel() if granularity == "weight" else units(w, mode)))
                z = reference_projection((w + u[n]).numpy(), k, mode)
                np.testing.assert_allclose(pruner.Z[n].numpy(), z, rtol=0, atol=0)
                u[n] = u[n] + w - torch.from_numpy(z)
        for n in names:
            torch.testing.assert_close(pruner.U[n], u[n], rtol=0, atol=1e-7)
        assert log["rho"] == pytest.approx(expected_rho) and pruner.rho == pytest.approx(expected_rho)
    assert pruner.updates == 3 and pruner.options()["final_rho"] == pytest.approx(0.01 * 1.3 ** 3)


def test_penalty_and_its_gradient() -> None:
    model = tiny_model()
    pruner = get_pruner("radmm")(0.5, rho=0.2, admm_every=1)
    pruner.attach(model)
    pruner.end_search_epoch(0)  # non-zero U; rho is now 0.2 * 1.3
    weights = [raw_weight(model.get_submodule(n)) for n in pruner.layers]
    penalty = pruner.extra_loss()
    expected = sum(0.5 * 0.26 * float(((w.detach() - pruner.Z[n] + pruner.U[n]) ** 2).sum())
                   for n, w in zip(pruner.layers, weights))
    assert float(penalty.detach()) == pytest.approx(expected, rel=1e-6)
    grads = torch.autograd.grad(penalty, weights)
    for n, w, g in zip(pruner.layers, weights, grads):
        torch.testing.assert_close(g, 0.26 * (w - pruner.Z[n] + pruner.U[n]).detach())
    trained = {id(p) for p in pruner.search_parameters()}
    assert all(id(p) in trained for p in weights) and not any(id(sm.scores) in trained for sm in pruner.layers.values())


def test_admm_drives_the_weights_to_the_sparse_set() -> None:
    """Minimising the penalty alone, with the updates, converges to a k-sparse W (the residual vanishes)."""
    model = tiny_model()
    pruner = get_pruner("radmm")(0.9, rho=1.0, rho_growth=1.0, admm_every=1)
    pruner.attach(model)
    opt = torch.optim.SGD(pruner.search_parameters(), lr=0.5)
    start = pruner.residual()
    for epoch in range(30):
        for _ in range(5):
            opt.zero_grad()
            pruner.extra_loss().backward()
            opt.step()
        pruner.end_search_epoch(epoch)
    assert start > 0.5 and pruner.residual() < 1e-3


@pytest.mark.parametrize("granularity", ["weight", "channel"])
def test_hard_prune_is_per_layer_magnitude(granularity: str) -> None:
    model = tiny_model()
    pruner = get_pruner("radmm")(0.75, granularity=granularity)
    pruner.attach(model)
    pruner.freeze()
    names = list(pruner.layers)
    for name, mask in pruner.masks().items():
        w = raw_weight(model.get_submodule(name)).detach().numpy()
        mode = unit(granularity, name, names)
        k = round(0.25 * (w.size if granularity == "weight" else units(w, mode)))
        np.testing.assert_array_equal(mask.numpy() * w, reference_projection(w, k, mode))


def test_state_round_trip_and_options() -> None:
    model = tiny_model()
    a = get_pruner("radmm")(0.5, admm_every=1)
    a.attach(model)
    a.end_search_epoch(0)
    b = get_pruner("radmm")(0.5, admm_every=1)
    b.attach(tiny_model())
    b.load_extra_state(a.extra_state())
    assert b.rho == a.rho and b.updates == 1
    assert all(torch.equal(a.Z[n], b.Z[n]) and torch.equal(a.U[n], b.U[n]) for n in a.layers)
    assert Radmm.has_scores is False and Radmm.no_s2ap_reason and Radmm.pipeline == "after"
    for bad, match in [({"rho": 0}, "'rho'"), ({"rho_growth": 0.5}, "'rho_growth'"),
                       ({"admm_every": 0}, "'admm_every'"), ({"admm_every": 1.5}, "'admm_every'")]:
        with pytest.raises(ValueError, match=match):
            get_pruner("radmm")(0.5, **bad)


@pytest.mark.parametrize("method", ["radmm", "mad"])
def test_an_interrupted_weight_search_resumes_bit_exactly(method: str, tmp_path, monkeypatch) -> None:
    """Stopped after the first search epoch's checkpoint, the re-run gives the straight run's masks, log and
    accuracy (R-ADMM's Z, U and rho, MAD's saliency sums travel in the checkpoint)."""
    from benchmark.config import SuiteConfig, build
    from benchmark.run.suite import run_suite
    from benchmark.store.results import read_result
    from benchmark.train.loop import EpochCheckpoint
    from tests.conftest import cell_files, tiny_suite_dict

    entry = {"method": "radmm", "options": {"admm_every": 1}, "phases": {"search": {"lr": 0.01}}} if method == "radmm" \
        else {"method": "mad", "options": {"mask_steps": 2}}
    evaluation = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}
    suite = build(SuiteConfig, tiny_suite_dict(name="resume", methods=[entry], evaluation=evaluation,
                                               search={"epochs": 2, "lr": 0.1, "batch_size": 256}))
    quiet = {"progress": False, "log": lambda s: None}
    run_suite(suite, results_dir=tmp_path / "straight", **quiet)
    (straight,) = [read_result(p) for p in cell_files(tmp_path / "straight" / "resume" / "digits")]
    real = EpochCheckpoint.save

    def save_then_stop(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if self.path.name == "search.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, results_dir=tmp_path / "resumed", **quiet)
    monkeypatch.setattr(EpochCheckpoint, "save", real)
    cls, epochs = get_pruner(method), []
    counted = cls.end_search_epoch
    monkeypatch.setattr(cls, "end_search_epoch", lambda self, epoch: epochs.append(epoch) or counted(self, epoch))
    run_suite(suite, results_dir=tmp_path / "resumed", **quiet)
    assert epochs == [1]  # the re-run went on from the stored epoch
    (resumed,) = [read_result(p) for p in cell_files(tmp_path / "resumed" / "resume" / "digits")]
    assert resumed["mask"]["final_masks_sha"] == straight["mask"]["final_masks_sha"]
    assert resumed["history"]["search"] == straight["history"]["search"] and len(straight["history"]["search"]) == 2
    assert resumed["evaluation"]["clean_accuracy"] == straight["evaluation"]["clean_accuracy"]
    assert straight["mask"]["stability"] == {} and straight["mask"]["robust_accuracy_after_search"] is not None
