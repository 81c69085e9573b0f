"""MART (MAD's finetuning objective) against its formula written out per example, its training attack's small
start, and per-method phase overrides in a suite (how MAD selects MART and R-ADMM its weight learning rate)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from benchmark.config import SuiteConfig, ThreatConfig, build
from benchmark.errors import ConfigError
from benchmark.train.loop import Objective
from benchmark.train.mart import mart_loss
from tests.conftest import tiny_suite_dict


def direct_mart(clean: torch.Tensor, adv: torch.Tensor, y: torch.Tensor, beta: float) -> float:
    """Per example: -log p_adv[y] - log(1 - max_{k != y} p_adv[k]) + beta * KL(p_clean || p_adv) (1 - p_clean[y])."""
    total = 0.0
    for c, a, t in zip(clean.tolist(), adv.tolist(), y.tolist()):
        pc = [math.exp(v) / sum(math.exp(u) for u in c) for v in c]
        pa = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
        wrong = max((p, k) for k, p in enumerate(pa) if k != t)[0]
        bce = -math.log(pa[t]) - math.log(1 - wrong)
        kl = sum(p * math.log(p / q) for p, q in zip(pc, pa))
        total += bce + beta * kl * (1 - pc[t])
    return total / len(y)


def test_mart_loss_matches_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    clean, adv = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    adv[1, 1] = 3.0  # an adversarial example still classified right: the wrong class is the runner-up
    for beta in (0.5, 6.0):
        assert float(mart_loss(clean, adv, y, beta)) == pytest.approx(direct_mart(clean, adv, y, beta), rel=1e-3)


def test_mart_objective_uses_both_passes_and_a_small_start() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.randint(0, 3, (5,))
    threat = ThreatConfig(eps="64/255", step_size="1/100000", steps=1)  # a negligible step: the start shows
    start = Objective("mart", threat).perturb(model, x, y)
    assert float((start - x).abs().max()) < 0.01  # x + 0.001 N(0, 1), not uniform in the 64/255 ball
    assert float((Objective("pgd-at", threat).perturb(model, x, y) - x).abs().max()) > 0.05
    x_adv = x + 0.1
    got = Objective("mart", threat, mart_beta=2.0).loss(model, x_adv, x, y)
    torch.testing.assert_close(got, mart_loss(model(x), model(x_adv), y, 2.0))


def test_methods_override_their_phases() -> None:
    suite = build(SuiteConfig, tiny_suite_dict(methods=[
        "hydra",
        {"method": "mad", "phases": {"finetune": {"objective": "mart", "mart_beta": 0.5}}},
        {"method": "radmm", "phases": {"search": {"lr": 0.01}}, "options": {"admm_every": 1}},
    ]))
    cells = {c.method.method: c for c in suite.cells() if c.sparsity == suite.sparsities[0]}
    assert cells["mad"].finetune.objective == "mart" and cells["mad"].finetune.mart_beta == 0.5
    assert cells["radmm"].search.lr == 0.01 and cells["radmm"].finetune == suite.finetune
    assert cells["hydra"].search == suite.search
    # the overrides belong to the method's identity: the suite's phases (the leaderboard's protocol) stay shared
    assert cells["mad"].identity()["method"]["finetune"] == {"objective": "mart", "mart_beta": 0.5}
    assert cells["mad"].identity()["finetune"] == cells["hydra"].identity()["finetune"]
    assert cells["radmm"].identity()["method"]["search"] == {"lr": 0.01}
    assert "search" not in cells["mad"].identity()["method"]
    assert "mart_beta" not in cells["hydra"].identity()["finetune"]  # a late field at its default: no new hash
    for bad, match in [({"finetune": {"objectiv": "mart"}}, r"methods\[0\] \(mad\) phases.finetune.objectiv"),
                       ({"finetune": {"mart_beta": -1}}, r"methods\[0\] \(mad\) phases.finetune.mart_beta"),
                       ({"search": {"awp": True}}, "search.awp")]:
        with pytest.raises(ConfigError, match=match):
            build(SuiteConfig, tiny_suite_dict(methods=[{"method": "mad", "phases": bad}]))


def test_verify_rebuilds_a_cell_with_phase_overrides() -> None:
    from benchmark.run.verify import suite_of

    entry = {"method": "mad", "phases": {"finetune": {"objective": "mart"}}}
    suite = build(SuiteConfig, tiny_suite_dict(methods=[entry]))
    cell = suite.cells()[0]
    stored = {"config": cell.identity(), "config_hash": cell.config_hash(), "cell": {"label": cell.method.label}}
    _, rebuilt = suite_of(stored)
    assert rebuilt.config_hash() == cell.config_hash() and rebuilt.finetune.objective == "mart"
