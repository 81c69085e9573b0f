"""Robust dense models: pretrained once per seed (or loaded from a checkpoint or the model zoo) and shared by
every cell of that seed."""

from __future__ import annotations

from pathlib import Path

import torch

from baselines.base import NonFiniteLossError
from benchmark.config import PhaseConfig, SuiteConfig, config_hash
from benchmark.data import DataSplits, loader_settings, make_loader
from benchmark.errors import BenchmarkError, CheckpointError
from benchmark.measure import measure
from benchmark.run.cells import build_model, seed_everything
from benchmark.run.locks import file_lock
from benchmark.store import gate
from benchmark.store.checkpoints import load_checkpoint, save_checkpoint
from benchmark.store.paths import dense_path
from benchmark.train.loop import EpochCheckpoint, train_phase


class DenseCache:
    """Robust dense models, pretrained once per seed and pretrain phase and stored as checkpoints under the suite
    folder (``root``). Cells share a dense model exactly when their effective pretrain (with a method's recipe)
    and hence their dense identity are equal: the checkpoint is keyed by the hash of that identity."""

    def __init__(self, suite: SuiteConfig, root: Path, data: DataSplits, device: torch.device,
                 progress: bool) -> None:
        self.suite, self.root, self.data, self.device, self.progress = suite, root, data, device, progress
        self._memo: dict[tuple[int, str], tuple[dict, dict]] = {}

    def _hash(self, seed: int, pretrain: PhaseConfig | None) -> str:
        return config_hash(self.suite.dense_identity(seed, pretrain))

    def path(self, seed: int, pretrain: PhaseConfig | None = None) -> Path:
        """The checkpoint of ``seed``'s dense model pretrained with ``pretrain`` (default: the suite's)."""
        return dense_path(self.root, seed, self._hash(seed, pretrain))

    def get(self, seed: int, pretrain: PhaseConfig | None = None) -> tuple[dict, dict]:
        """(state dict, pretrain record) of the dense model for ``seed`` and ``pretrain`` (default: the suite's
        pretrain); trains it if not stored."""
        key = (seed, self._hash(seed, pretrain))
        if key in self._memo:
            return self._memo[key]
        if self.suite.dense.source != "pretrain":  # a checkpoint file or a RobustBench entry, shared by all seeds
            from benchmark.run.dense_sources import load_dense

            self._memo[key] = load_dense(self.suite, build_model(self.suite, self.data))
            return self._memo[key]
        path = self.path(seed, pretrain)
        with file_lock(self.root, path.with_suffix(".lock"), wait=True):
            if gate.kind(self.root, path) != "missing":
                out = self._cached(path)
            else:
                try:
                    out = self._pretrain(seed, path, pretrain or self.suite.pretrain)
                except NonFiniteLossError as e:
                    raise BenchmarkError(f"dense pretraining of seed {seed} stopped: {e}; lower pretrain.lr or check "
                                         "the data (its last good epoch resumes from "
                                         f"{path.with_name(path.stem + '.epoch.pt')})") from None
        self._memo[key] = out
        return out

    def _cached(self, path: Path) -> tuple[dict, dict]:
        """A stored dense model, refused in one line unless it is this harness's record for this model."""
        payload = load_checkpoint(self.root, path)
        state, record = payload.get("state_dict"), payload.get("record")
        fix = f"delete {path} (it is pretrained again) or give the right --results-dir"
        if not isinstance(state, dict) or not isinstance(record, dict):
            raise CheckpointError(f"cached dense model {path} is not one this harness wrote (no state_dict and "
                                  f"record); {fix}")
        if self.data is not None:
            try:
                build_model(self.suite, self.data).load_state_dict(state)
            except (RuntimeError, TypeError, ValueError) as e:
                first = " ".join(str(e).split())[:160]
                raise CheckpointError(f"cached dense model {path} does not fit model {self.suite.model!r} "
                                      f"({first}); {fix}") from None
        return state, {**record, "reused_checkpoint": path.name}

    def _pretrain(self, seed: int, path: Path, pretrain: PhaseConfig) -> tuple[dict, dict]:
        s = self.suite
        seed_everything(seed)
        model = build_model(s, self.data).to(self.device)
        loader = make_loader(self.data.train, pretrain.batch_size, shuffle=True, seed=seed,
                             **loader_settings(s.dataset, self.device))
        record: dict = {"epochs": pretrain.epochs}
        progress_file = path.with_name(path.stem + ".epoch.pt")
        with measure(record, self.device):
            history = train_phase(model, loader, list(model.parameters()), pretrain, s.threat,
                                  device=self.device, desc=f"pretrain seed {seed}", progress=self.progress,
                                  checkpoint=EpochCheckpoint(self.root, progress_file))
        record["final_loss"] = history[-1]["loss"] if history else None
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(self.root, path, {"state_dict": state, "record": record})
        gate.remove(self.root, progress_file)
        return state, record
