"""Robust dense models: pretrained once per seed (or loaded from a checkpoint or the model zoo) and shared by
every cell of that seed."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmark.config import PhaseConfig, SuiteConfig, config_hash
from benchmark.data import DataSplits, loader_settings, make_loader
from benchmark.measure import measure
from benchmark.run.cells import build_model, seed_everything
from benchmark.run.locks import file_lock
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
        with file_lock(path.with_suffix(".lock"), wait=True):
            if path.exists():
                payload = load_checkpoint(path)
                out = (payload["state_dict"], {**payload["record"], "reused_checkpoint": path.name})
            else:
                out = self._pretrain(seed, path, pretrain or self.suite.pretrain)
        self._memo[key] = out
        return out

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
                                  checkpoint=EpochCheckpoint(progress_file))
        record["final_loss"] = history[-1]["loss"] if history else None
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_checkpoint(path, {"state_dict": state, "record": record})
        progress_file.unlink(missing_ok=True)
        return state, record
