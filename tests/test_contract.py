"""The contract every registered pruner (and its +S2AP variant, where it has scores) must pass, on several
architectures that know nothing about pruning. A pruner registered by a third party through an entry point
(the example of docs/adding-a-pruner.md) goes through the same checks."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from baselines import PRUNERS, Pruner, sparsity_report
from baselines.masking import current_masks, keep_count, raw_weight
from benchmark.config import PhaseConfig, SuiteConfig, ThreatConfig, build
from benchmark.data.datasets import make_loader
from benchmark.models import create_model
from benchmark.run.cells import finetune_parameters, robust_figures, search_parameters, sparse_training
from benchmark.train.loop import train_phase
from s2ap import S2APSettings, build_pruner, list_methods

ROOT = Path(__file__).resolve().parents[1]
THREAT = ThreatConfig(eps="16/255", step_size="8/255", steps=1)
SEARCH = PhaseConfig(epochs=1, lr=0.05, batch_size=8)  # 16 points: two real mask-search steps
FINETUNE = PhaseConfig(epochs=1, lr=0.05, batch_size=8, awp=True, awp_gamma=0.01)  # AWP perturbs the weights too
TRAIN = PhaseConfig(epochs=3, lr=0.05, batch_size=8)  # "during" pruners: 3 epochs of 2 steps, 2 mask updates
MODELS = {"digits_cnn": (1, 8, 8), "mlp": (1, 8, 8), "tiny_resnet": (3, 16, 16)}
SPARSITY = 0.9
# Every registered method with its default options, plus option values that change how masks are allocated.
VARIANTS = [(m, {}) for m in list_methods()] + [("magnitude", {"scope": "global"}), ("harp", {"init": "erk"})]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These models are tiny: one intra-op thread is faster than two and unaffected by a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def variant_id(variant: tuple[str, dict]) -> str:
    method, options = variant
    return method + "".join(f"[{k}={v}]" for k, v in options.items())


def data(shape: tuple[int, int, int], seed: int = 0) -> torch.utils.data.TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(16, *shape, generator=gen)
    return torch.utils.data.TensorDataset(x, torch.randint(0, 10, (16,), generator=gen))


def prune(method: str, model_name: str, seed: int = 0, finetune: bool = True, **options):
    """A short real pipeline of the pruner's kind: the data hook, attach, then one mask-search epoch (pipelines
    after and before, if the pruner searches) or three epochs of sparse training with the pruner's hooks and
    its epoch figures (pipeline during), freeze, and one AWP finetune epoch (whatever the pipeline: the masks
    must hold under any training of the weights).

    Returns the pruner, the model, the masks right after freezing, and the raw weights right after freezing.
    """
    torch.manual_seed(seed)
    shape = MODELS[model_name]
    model = create_model(model_name, 10, shape[0])
    pruner = build_pruner(method, SPARSITY, s2ap=S2APSettings(gamma=0.1, warmup_epochs=0), seed=seed, **options)
    loader = make_loader(data(shape), SEARCH.batch_size, shuffle=True, seed=seed)
    model.eval()
    pruner.prepare(model, iter(loader))
    pruner.attach(model)
    cpu = torch.device("cpu")
    if pruner.pipeline == "during":
        start = current_masks(model)
        x, y = data(shape, seed + 1).tensors

        def figures() -> dict[str, float]:
            accuracy, loss = robust_figures(model, x, y, THREAT, 2, 16, 0, cpu)
            return {"train_robust_accuracy": accuracy, "val_robust_accuracy": accuracy / 2, "val_robust_loss": loss}

        history = sparse_training(model, pruner, loader, TRAIN, THREAT, cpu, figures)
        assert len(history) == TRAIN.epochs
        assert not all(torch.equal(start[n], m) for n, m in current_masks(model).items()), \
            "a 'during' pruner changes its masks while the weights train"
    elif pruner.needs_search:
        params = search_parameters(model, pruner, freeze_bn=False)
        train_phase(model, loader, params, SEARCH, THREAT, device=cpu, step=pruner.search_step, progress=False)
    frozen = [p.detach().clone() for p in pruner.frozen_parameters()]
    pruner.freeze()
    masks = current_masks(model)
    weights = {n: raw_weight(model.get_submodule(n)).detach().clone() for n in masks}
    if finetune:
        train_phase(model, loader, finetune_parameters(model, pruner), FINETUNE, THREAT, device=cpu, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(frozen, pruner.frozen_parameters())), "a frozen parameter moved"
    return pruner, model, masks, weights


def check_sparsity(pruner: Pruner, masks: dict[str, torch.Tensor]) -> None:
    """Zeros counted in the exported weights are exactly the masks' zeros, and the kept counts are the target:
    round(k * n_l) in every layer (uniform pruners), round(k * N) over the network (global budgets), or MAD's
    public rule: round(k * N') over every layer but a final Linear one, which keeps round(k * in) per row."""
    exported = pruner.export()
    report = sparsity_report(exported)
    keep = 1 - SPARSITY
    if pruner.pipeline == "during":
        # a weight regrown at a late topology update into a unit that stayed inactive (a handful of steps on
        # random data here) can still be exactly zero: kept, yet counted as a zero in the achieved sparsity
        for name, mask in masks.items():
            assert torch.all(exported.get_submodule(name).weight.detach()[mask == 0] == 0), name
    else:
        assert report["n_zero"] == sum(int((m == 0).sum()) for m in masks.values())
        for name, mask in masks.items():
            assert report["per_layer"][name]["n_zero"] == int((mask == 0).sum()), name
    kept = {name: int(mask.sum()) for name, mask in masks.items()}
    per_layer = all(kept[n] == keep_count(keep, m.numel()) for n, m in masks.items())
    global_budget = sum(kept.values()) == keep_count(keep, report["n_weights"])
    *rest, last = masks
    rows, fan_in = masks[last].shape if masks[last].dim() == 2 else (0, 0)
    final_rows = rows > 0 and kept[last] == rows * keep_count(keep, fan_in) \
        and sum(kept[n] for n in rest) == keep_count(keep, sum(masks[n].numel() for n in rest))
    assert per_layer or global_budget or final_rows, (kept, report["global"])
    achieved = 1 - sum(kept.values()) / report["n_weights"]
    rounded = len(masks) + (rows if final_rows else 0)  # entries rounded: one per layer, or per row
    assert achieved == pytest.approx(SPARSITY, abs=0.5 * rounded / report["n_weights"])


def check_masks_hold_through_finetune(model: nn.Module, masks: dict, before: dict) -> None:
    """Masks are binary and unchanged; pruned weights stayed exactly zero while kept weights were trained."""
    now = current_masks(model)
    moved = False
    for name, mask in masks.items():
        assert set(mask.unique().tolist()) <= {0.0, 1.0}, name
        assert torch.equal(now[name], mask), f"mask of {name} changed in finetuning"
        raw = raw_weight(model.get_submodule(name)).detach()
        assert torch.all(raw[mask == 0] == 0), f"pruned weights of {name} moved in finetuning"
        moved |= not torch.equal(raw[mask == 1], before[name][mask == 1])
    assert moved, "finetuning changed no kept weight: the check above would be vacuous"


def check_export_loads(pruner: Pruner, model: nn.Module, model_name: str) -> None:
    """The export loads strictly into the bare architecture and computes what the masked model computes."""
    shape = MODELS[model_name]
    plain = create_model(model_name, 10, shape[0])
    plain.load_state_dict(pruner.export().state_dict())  # strict
    x = torch.rand(4, *shape)
    model.eval()
    plain.eval()
    torch.testing.assert_close(plain(x), model(x))


def check_contract(method: str, model_name: str, **options) -> None:
    pruner, model, masks, before = prune(method, model_name, **options)
    check_sparsity(pruner, masks)
    check_masks_hold_through_finetune(model, masks, before)
    check_export_loads(pruner, model, model_name)


def check_deterministic(method: str, **options) -> None:
    _, _, a, _ = prune(method, "mlp", seed=3, finetune=False, **options)
    _, _, b, _ = prune(method, "mlp", seed=3, finetune=False, **options)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(params=VARIANTS, ids=variant_id)
def variant(request) -> tuple[str, dict]:
    return request.param


@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_contract(variant: tuple[str, dict], model_name: str) -> None:
    method, options = variant
    check_contract(method, model_name, **options)


def test_deterministic_under_a_seed(variant: tuple[str, dict]) -> None:
    method, options = variant
    check_deterministic(method, **options)


def test_channel_granularity(variant: tuple[str, dict]) -> None:
    """Pruners that offer channel pruning remove whole output channels, and whole input columns of the
    classifier (every class keeps its row); the export still loads."""
    method, options = variant
    if "channel" not in PRUNERS.get(method.split("+")[0]).granularities:
        pytest.skip("weight granularity only")
    pruner, model, masks, _ = prune(method, "digits_cnn", finetune=False, granularity="channel", **options)
    classifier = list(masks)[-1]
    units = {n: m.flatten(1) if n != classifier else m.transpose(0, 1).flatten(1) for n, m in masks.items()}
    for name, rows in units.items():
        assert torch.all((rows == 0).all(1) | (rows == 1).all(1)), name
    assert torch.all(masks[classifier].sum(1) > 0)  # no class left without an input
    channels = {name: len(rows) for name, rows in units.items()}
    kept = {name: int(rows[:, 0].sum()) for name, rows in units.items()}
    per_layer = all(kept[n] == keep_count(1 - SPARSITY, channels[n]) for n in masks)
    n_weights = sum(m.numel() for m in masks.values())
    kept_weights = sum(int(m.sum()) for m in masks.values())
    largest_channel = max(rows[0].numel() for rows in units.values())
    global_budget = 0 <= keep_count(1 - SPARSITY, n_weights) - kept_weights < largest_channel
    assert per_layer or global_budget, kept
    check_export_loads(pruner, model, "digits_cnn")


def test_every_builtin_is_in_the_contract() -> None:
    assert {"hydra", "hydra+s2ap", "harp", "harp+s2ap", "magnitude", "random", "rst", "rst+s2ap", "flyingbird",
            "flyingbird+", "twinrep"} <= set(list_methods())
    assert "magnitude+s2ap" not in list_methods() and "random+s2ap" not in list_methods()
    pipelines = {PRUNERS.get(m.split("+s2ap")[0]).pipeline for m, _ in VARIANTS}
    assert pipelines == {"after", "before", "during"}, "the contract covers every pipeline"


def test_global_magnitude_keeps_the_largest_weights_overall() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight.copy_(1 + torch.rand(10, 10))  # the first layer holds the largest weights
        model[2].weight.copy_(0.5 * torch.rand(10, 10))
    pruner = build_pruner("magnitude", 0.5, scope="global")
    pruner.attach(model)
    masks = pruner.masks()
    assert int(masks["0"].sum()) == 99 and int(masks["2"].sum()) == 1  # at least one weight per layer, 100 in all
    with pytest.raises(ValueError, match="scope"):
        build_pruner("magnitude", 0.5, scope="everywhere")


def test_random_masks_follow_the_seed() -> None:
    a = build_pruner("random", 0.9, seed=0)
    b = build_pruner("random", 0.9, seed=1)
    a.attach(create_model("mlp", 10, 1))
    b.attach(create_model("mlp", 10, 1))
    assert not all(torch.equal(x, y) for x, y in zip(a.masks().values(), b.masks().values()))


# -- a third-party pruner: the example of docs/adding-a-pruner.md, installed through an entry point ----------
EXAMPLE = ROOT / "docs" / "examples" / "my_pruner.py"
GUIDE = ROOT / "docs" / "adding-a-pruner.md"
# The example registers "my-pruner"; here it is installed under another name, so that these tests still run
# (and do not collide) where a user has installed their own "my-pruner" by following the guide.
NAME, MODULE = "guide-example", "guide_example_pruner"


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    """The guide's example made visible only through a fake installed distribution's ``s2ap_bench.pruners``
    entry point, as ``pip install`` of a package with the guide's pyproject table would do."""
    dist = tmp_path / "guide_example-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: guide-example\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[s2ap_bench.pruners]\n{NAME} = {MODULE}\n")
    (tmp_path / f"{MODULE}.py").write_text(EXAMPLE.read_text().replace('"my-pruner', f'"{NAME}'))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(PRUNERS, "_plugins_loaded", False)
    assert NAME not in PRUNERS._items, "the example must arrive through the entry point"
    try:
        yield
    finally:
        PRUNERS.remove(NAME)
        sys.modules.pop(MODULE, None)


@pytest.mark.parametrize("method", [NAME, f"{NAME}+s2ap"])
def test_a_third_party_entry_point_passes_the_same_contract(installed_example, method: str) -> None:
    assert method in list_methods()
    for model_name in ("digits_cnn", "mlp"):
        check_contract(method, model_name, l1=1e-4)
    check_deterministic(method)
    assert PRUNERS.get(NAME).__module__ == MODULE
    with pytest.raises(ValueError, match="'l1'"):
        build_pruner(method, 0.9, l1=-1)


def test_the_example_starts_from_the_data_hook(installed_example) -> None:
    """A SNIP-like start through ``prepare``: the initial scores are |w * dL/dw| on the batch it was given."""
    torch.manual_seed(0)
    model = create_model("mlp", 10, 1).eval()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    grads = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), [m.weight for _, m in layers])
    expected = {n: (m.weight * g).abs() for (n, m), g in zip(layers, grads)}
    pruner = build_pruner(NAME, 0.9)
    pruner.prepare(model, iter([(x, y)]))
    pruner.attach(model)
    for name, sm in pruner.layers.items():
        torch.testing.assert_close(sm.scores.detach(), expected[name] / expected[name].max())
    with pytest.raises(KeyError):  # without the hook there is no start
        build_pruner(NAME, 0.9).attach(create_model("mlp", 10, 1))


def test_the_guide_shows_the_example_and_a_valid_suite(installed_example) -> None:
    text = GUIDE.read_text()
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, flags=re.S)
    assert ("python", EXAMPLE.read_text()) in blocks, "the guide's code block must be docs/examples/my_pruner.py"
    toml = next(body for lang, body in blocks if lang == "toml")
    assert '[project.entry-points."s2ap_bench.pruners"]' in toml and 'my-pruner = "' in toml
    yaml_text = next(body for lang, body in blocks if lang == "yaml").replace("my-pruner", NAME)
    suite = build(SuiteConfig, yaml.safe_load(yaml_text))
    assert [m.method for m in suite.methods] == ["hydra", NAME, f"{NAME}+s2ap"]
    readme = ROOT / "README.md"
    if readme.exists():
        assert "docs/adding-a-pruner.md" in readme.read_text()
