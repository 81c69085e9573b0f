"""RobustBench model-zoo entries as dense starting points, through the one thin adapter the project has.

The weights are read offline from the file RobustBench itself would use,
``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (fetch it once where the internet is reachable, e.g. with
``robustbench.utils.load_model``, and copy it), either into an architecture registered here (no robustbench
install needed) or, with the suite's ``model: robustbench`` (:data:`ZOO_MODEL`), into the entry's own
architecture built from robustbench's model zoo (any entry, offline: the checkpoint file is the only
download). Only :func:`zoo_architecture` and :func:`zoo_model` import robustbench, and they live with
robustbench 1.1.1's problems: it imports ``autoattack`` (not on PyPI; a shim over
``pyautoattack`` with the old keyword names stands in for the duration of the import), ``pkg_resources``
(gone from setuptools >= 81; a one-function shim stands in likewise) and torchvision (the safe import in
:mod:`benchmark.data.vision` runs first). RobustBench never evaluates anything here.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

from torch import Tensor, nn

from benchmark.errors import CheckpointError
from benchmark.store.checkpoints import load_input_checkpoint

# Suite data set -> RobustBench's data set name.
ROBUSTBENCH_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagefolder": "imagenet"}
# Blocks some zoo checkpoints carry but their forward pass never uses (the TRADES WideResNet's "sub_block1").
UNUSED_PREFIXES = ("sub_block1.",)
# The suite's ``model`` value meaning "the architecture of the dense.robustbench_name entry".
ZOO_MODEL = "robustbench"
# Buffers that are not BatchNorm statistics (``mu``/``sigma``, ``mean``/``std``) are normalisation constants the
# zoo architecture sets itself; RobustBench loads checkpoints that lack them (Engstrom2019Robustness,
# Wong2020Fast, ...), and so do we. Likewise the keys its loader ignores (pruning scores, extra heads, the
# attacker copy and normaliser of robustness-library checkpoints).
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")
ZOO_UNUSED = (".scores", "model_preact_hl1.", "attacker.", "normalizer.")


def checkpoint_path(name: str, dataset: str, threat_model: str = "Linf", model_dir: str | Path = "models") -> Path:
    """Where RobustBench keeps (and looks for) the checkpoint of a zoo entry."""
    if dataset not in ROBUSTBENCH_DATASETS:
        raise CheckpointError(f"RobustBench has no models for data set {dataset!r} (it has "
                              f"{', '.join(ROBUSTBENCH_DATASETS)})")
    return Path(model_dir) / ROBUSTBENCH_DATASETS[dataset] / threat_model / f"{name}.pt"


def load_state_dict(name: str, dataset: str, threat_model: str = "Linf", model_dir: str | Path = "models",
                    drop_unused: bool = True) -> tuple[dict[str, Tensor], Path]:
    """The weights of a zoo entry from its local file (``weights_only=True``), with the prefixes RobustBench
    strips (``module.``, ``model.``) removed and, with ``drop_unused``, the blocks its forward pass never runs
    dropped (they have no counterpart in the registered architectures); returns (state dict, path)."""
    from benchmark.models.state_dicts import unwrap_state_dict

    path = checkpoint_path(name, dataset, threat_model, model_dir)
    if not path.is_file():
        raise CheckpointError(
            f"RobustBench checkpoint not found at {path}; fetch it once on a machine with internet access "
            f"(robustbench.utils.load_model({name!r}, model_dir=..., dataset={ROBUSTBENCH_DATASETS[dataset]!r}, "
            f"threat_model={threat_model!r})) and copy it there, or set dense.robustbench_dir"
        )
    state = unwrap_state_dict(load_input_checkpoint(path), f"RobustBench checkpoint {path}", ("module.", "model."))
    if drop_unused:
        state = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    return state, path


def autoattack_shim() -> types.ModuleType:
    """A module named ``autoattack`` offering the old AutoAttack signature on top of ``pyautoattack``."""
    import pyautoattack
    import pyautoattack.state

    class AutoAttack(pyautoattack.AutoAttack):
        """Old keyword names (``attacks_to_run``, ``bs``, positional ``norm``/``eps``) mapped to pyautoattack's."""

        def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 0.3, seed: int | None = None,
                     verbose: bool = True, attacks_to_run: list[str] | tuple = (), version: str = "standard",
                     device: str = "cuda", **_ignored) -> None:
            super().__init__(model, attacks=list(attacks_to_run) or None, device=device, eps=eps, norm=norm,
                             seed=seed, version=version)
            self.verbose = verbose

        def run_standard_evaluation(self, x_orig, y_orig, bs: int = 250, return_labels: bool = False,
                                    state_path=None):
            x_adv, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=bs, state_path=state_path)
            return (x_adv, y_adv) if return_labels else x_adv

    module = types.ModuleType("autoattack", "pyautoattack behind the old autoattack names (s2ap-bench shim)")
    module.AutoAttack = AutoAttack  # type: ignore[attr-defined]
    module.state = pyautoattack.state  # type: ignore[attr-defined]
    return module


def pkg_resources_shim() -> types.ModuleType:
    """A module named ``pkg_resources`` with the one function robustbench uses, on ``importlib.resources``."""
    from importlib import resources

    def resource_filename(package: str, name: str) -> str:
        return str(resources.files(package) / name)

    module = types.ModuleType("pkg_resources", "resource_filename on importlib.resources (s2ap-bench shim)")
    module.resource_filename = resource_filename  # type: ignore[attr-defined]
    return module


def import_robustbench() -> types.ModuleType:
    """Import robustbench (torchvision fixed first; ``autoattack`` and ``pkg_resources`` shimmed where missing,
    only during the import)."""
    from benchmark.data.vision import torchvision

    torchvision()
    shims: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("autoattack") is None:
        shim = autoattack_shim()
        shims.update({"autoattack": shim, "autoattack.state": shim.state})  # type: ignore[attr-defined]
    if importlib.util.find_spec("pkg_resources") is None:
        shims["pkg_resources"] = pkg_resources_shim()
    sys.modules.update(shims)
    try:
        import robustbench
        import robustbench.model_zoo  # noqa: F401
    except ImportError as e:
        raise CheckpointError(f"robustbench is not importable ({e}); install it (pip install "
                              "'s2ap-bench[robustbench]') or load the checkpoint into a registered model "
                              "(dense.source: robustbench with a matching 'model')") from None
    finally:
        for name in shims:
            sys.modules.pop(name, None)
    return robustbench


def zoo_architecture(name: str, dataset: str, threat_model: str = "Linf") -> nn.Module:
    """The zoo entry's own architecture, randomly initialised (needs robustbench; downloads nothing)."""
    if dataset not in ROBUSTBENCH_DATASETS:
        raise CheckpointError(f"RobustBench has no models for data set {dataset!r} (it has "
                              f"{', '.join(ROBUSTBENCH_DATASETS)})")
    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        entry = model_dicts[BenchmarkDataset(ROBUSTBENCH_DATASETS[dataset])][ThreatModel(threat_model)][name]
    except (KeyError, ValueError):
        raise CheckpointError(f"no RobustBench model {name!r} for {dataset} / {threat_model}; see "
                              "robustbench's model zoo for the names") from None
    if isinstance(entry.get("gdrive_id"), list):
        raise CheckpointError(f"RobustBench model {name!r} is an ensemble of several checkpoints; choose a "
                              "single-checkpoint entry")
    return entry["model"]()


def fit_zoo_state(model: nn.Module, state: dict[str, Tensor], origin: str) -> dict[str, Tensor]:
    """``state`` completed the way RobustBench's loader tolerates: normalisation constants missing from the file
    taken from the architecture, known-unused keys dropped, a ``model.`` prefix restored where the architecture
    has one; the result is then checked key by key and shape by shape."""
    from benchmark.models.state_dicts import fit_state_dict

    target = model.state_dict()
    if all(k.startswith("model.") for k in target) and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    buffers = {k for k, _ in model.named_buffers()}
    state = {k: v for k, v in state.items() if k in target or not any(u in k for u in ZOO_UNUSED)}
    for key in target:
        if key not in state and key in buffers and not key.endswith(RUNNING_STATS):
            state[key] = target[key].clone()
    return fit_state_dict(model, state, origin, ZOO_MODEL)


def zoo_model(name: str, dataset: str, threat_model: str = "Linf", model_dir: str | Path = "models") -> nn.Module:
    """The zoo entry's own architecture (needs robustbench) with the weights of its local file, in eval mode."""
    model = zoo_architecture(name, dataset, threat_model)
    state, path = load_state_dict(name, dataset, threat_model, model_dir, drop_unused=False)
    model.load_state_dict(fit_zoo_state(model, state, f"RobustBench checkpoint {path} of {name}"))
    return model.eval()
