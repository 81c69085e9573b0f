"""pytest-benchmark of the hot paths, each beside its bare-PyTorch twin (:mod:`tests.benchmarks.twins`).

Each hot path is a group of two benchmarks, ``harness`` and ``bare``, timed from the same starting state
(restored before every round, outside the timing); after timing, the test checks that both arms computed the
same thing. Workloads are those of the default suite: digits_cnn on the 8x8 digits, PGD-10 at eps 32/255
(``digits-quick``), 90 % sparsity. Run with ``make bench``; timings are compared with the stored baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines import adversarial_step
from baselines.masking import attach_score_masks
from benchmark.bench.speed import direct_autoattack, fit_clean
from benchmark.config import load_suite
from benchmark.data import DataSplits, load_dataset
from benchmark.evaluate.robustness import autoattack
from benchmark.models import create_model
from benchmark.run.cells import search_parameters
from benchmark.train.loop import make_objective, make_optimizer
from s2ap import S2APSettings, build_pruner
from tests.benchmarks import twins

ARMS = ("harness", "bare")
SPARSITY = 0.9
SUITE = load_suite("digits-quick")


@dataclass
class Pair:
    """The two arms of one hot path, how to put both back at their common start, and what to compare."""

    harness: Callable[[], object]
    bare: Callable[[], object]
    outcome: Callable[[str, object], list[Tensor]]
    reset: Callable[[], None] = lambda: None


def run_pair(benchmark, pair: Pair, arm: str, rounds: int) -> None:
    """Time ``arm`` (``rounds`` rounds, each from the common start), then check the other arm agrees."""
    benchmark.extra_info["arm"] = arm
    result = benchmark.pedantic(getattr(pair, arm), setup=pair.reset, rounds=rounds, warmup_rounds=1)
    mine = pair.outcome(arm, result)
    other = ARMS[1 - ARMS.index(arm)]
    pair.reset()
    theirs = pair.outcome(other, getattr(pair, other)())
    assert len(mine) == len(theirs) > 0
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b)


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    d = SUITE.dataset
    return load_dataset(d.name, val_fraction=d.val_fraction, split_seed=d.split_seed)


def first(dataset, n: int) -> tuple[Tensor, Tensor]:
    items = [dataset[i] for i in range(n)]
    return torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def state(model: nn.Module) -> list[Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def bn_state(model: nn.Module) -> list[Tensor]:
    """BatchNorm parameters and running statistics, in module order."""
    return [t.detach().clone() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for t in (m.weight, m.bias, m.running_mean, m.running_var)]


def snapshot(*models: nn.Module) -> Callable[[], None]:
    """A reset: the models' current state back, and the RNG reseeded (the PGD random start)."""
    states = [copy.deepcopy(m.state_dict()) for m in models]

    def reset() -> None:
        for m, s in zip(models, states):
            m.load_state_dict(s)
            m.train()
        torch.manual_seed(0)

    return reset


def mask_pair(model_name: str, x: Tensor, y: Tensor) -> Pair:
    """Forward and backward (gradient w.r.t. the scores) through the ScoreMask parametrization vs masked layers."""
    torch.manual_seed(0)
    dense = create_model(model_name, 10, x.shape[1])
    harness = copy.deepcopy(dense)
    masks = attach_score_masks(harness, 1 - SPARSITY)
    with torch.no_grad():
        for sm in masks.values():
            sm.scores.normal_()
    twin = twins.masked_twin(dense, {n: sm.scores for n, sm in masks.items()}, 1 - SPARSITY)
    scores = [sm.scores for sm in masks.values()]
    twin_scores = [m.scores for m in twins.masked_layers(twin)]

    def grads(model: nn.Module, wrt: list[nn.Parameter]) -> tuple[Tensor, ...]:
        return torch.autograd.grad(F.cross_entropy(model(x), y), wrt)

    return Pair(harness=lambda: grads(harness, scores), bare=lambda: grads(twin, twin_scores),
                outcome=lambda arm, result: list(result))


@pytest.mark.parametrize("arm", ARMS)
@pytest.mark.parametrize("model_name", ["digits_cnn", "tiny_resnet"])
def test_mask_forward_backward(benchmark, digits, model_name: str, arm: str) -> None:
    if model_name == "digits_cnn":
        x, y = first(digits.train, SUITE.search.batch_size)
    else:  # a deeper model (10 masked layers) on 32x32 inputs
        x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    benchmark.group = f"mask forward+backward, {model_name}"
    run_pair(benchmark, mask_pair(model_name, x, y), arm, rounds=100)


@pytest.mark.benchmark(group="PGD-AT step (PGD-10), digits_cnn")
@pytest.mark.parametrize("arm", ARMS)
def test_pgd_at_step(benchmark, digits, arm: str) -> None:
    x, y = first(digits.train, SUITE.pretrain.batch_size)
    torch.manual_seed(0)
    harness = create_model(SUITE.model, 10, 1)
    bare = copy.deepcopy(harness)
    phase, t = SUITE.pretrain, SUITE.threat
    objective = make_objective(phase, t)
    opts: dict[str, torch.optim.Optimizer] = {}
    restore = snapshot(harness, bare)

    def reset() -> None:  # a fresh optimizer too: every round is the same first step
        restore()
        opts["harness"] = make_optimizer(list(harness.parameters()), phase, 1)[0]
        opts["bare"] = torch.optim.SGD(bare.parameters(), lr=phase.lr, momentum=phase.momentum,
                                       weight_decay=phase.weight_decay)

    pair = Pair(
        harness=lambda: adversarial_step(lambda: objective.perturb(harness, x, y),
                                         lambda x_adv: objective.loss(harness, x_adv, x, y), opts["harness"]),
        bare=lambda: twins.pgd_at_step(bare, opts["bare"], x, y, t.eps_value, t.step_value, t.steps),
        outcome=lambda arm, loss: [loss, *state(harness if arm == "harness" else bare)],
        reset=reset,
    )
    reset()
    run_pair(benchmark, pair, arm, rounds=40)


@pytest.mark.benchmark(group="S2AP search step (PGD-10, x_adv reused), digits_cnn")
@pytest.mark.parametrize("arm", ARMS)
def test_s2ap_step(benchmark, digits, arm: str) -> None:
    x, y = first(digits.train, SUITE.search.batch_size)
    method = next(m for m in SUITE.methods if m.method == "hydra+s2ap")
    settings = S2APSettings(gamma=method.s2ap.gamma, warmup_epochs=0)
    torch.manual_seed(0)
    dense = create_model(SUITE.model, 10, 1)
    harness = copy.deepcopy(dense)
    pruner = build_pruner("hydra+s2ap", SPARSITY, s2ap=settings)
    pruner.attach(harness)
    bare = twins.masked_twin(dense, {n: sm.scores for n, sm in pruner.layers.items()}, 1 - SPARSITY)
    params = {"harness": search_parameters(harness, pruner, freeze_bn=False), "bare": twins.search_parameters(bare)}
    phase, t = SUITE.search, SUITE.threat
    objective = make_objective(phase, t)
    opts: dict[str, torch.optim.Optimizer] = {}
    restore = snapshot(harness, bare)

    def reset() -> None:
        restore()
        opts["harness"] = make_optimizer(params["harness"], phase, 1)[0]
        opts["bare"] = torch.optim.SGD(params["bare"], lr=phase.lr, momentum=phase.momentum,
                                       weight_decay=phase.weight_decay)

    def outcome(arm: str, loss: object) -> list[Tensor]:
        if arm == "harness":
            return [loss, *(s.detach().clone() for s in pruner.score_parameters()), *bn_state(harness)]
        return [loss, *(m.scores.detach().clone() for m in twins.masked_layers(bare)), *bn_state(bare)]

    pair = Pair(
        harness=lambda: pruner.search_step(lambda: objective.perturb(harness, x, y),
                                           lambda x_adv: objective.loss(harness, x_adv, x, y), opts["harness"], 0),
        bare=lambda: twins.s2ap_step(bare, opts["bare"], x, y, t.eps_value, t.step_value, t.steps, settings.gamma),
        outcome=outcome,
        reset=reset,
    )
    reset()
    run_pair(benchmark, pair, arm, rounds=40)


@pytest.mark.benchmark(group="AutoAttack fast, 50 points, digits_cnn")
@pytest.mark.parametrize("arm", ARMS)
def test_autoattack(benchmark, digits, arm: str) -> None:
    ev, eps = SUITE.evaluation, SUITE.threat.eps_value
    x, y = first(digits.test, ev.n_examples)
    torch.manual_seed(0)
    model = fit_clean(create_model(SUITE.model, 10, 1), digits.train, torch.device("cpu"))
    pair = Pair(
        harness=lambda: autoattack(model, x, y, eps=eps, version_name=ev.autoattack, seed=ev.seed,
                                   batch_size=ev.batch_size)["robust_accuracy"],
        bare=lambda: direct_autoattack(model, x, y, eps, ev.autoattack, ev.batch_size, torch.device("cpu")),
        outcome=lambda arm, robust: [torch.tensor(robust)],
    )
    run_pair(benchmark, pair, arm, rounds=5)
