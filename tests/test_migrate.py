"""``s2ap-bench migrate``: results written before masks and models were content-addressed (``.pt`` files, no mask
sha256) are brought up to date with identical tensors, the same config hashes and byte-identical tables."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.run.suite import run_suite
from benchmark.run.verify import leaves
from benchmark.store.results import result_files
from benchmark.store.schema import checksum
from tests.conftest import tiny_suite_dict

QUICK = tiny_suite_dict(pretrain={"epochs": 0}, search={"epochs": 0}, finetune={"epochs": 0}, seeds=[0, 1],
                        evaluation={"n_examples": 4, "autoattack": "none", "pgd_steps": 1}, methods=["magnitude"])
LEGACY_FORMAT = "state_dict (torch.save; torch.load(path, weights_only=True))"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fresh")
    run_suite(build(SuiteConfig, QUICK), results_dir=root, progress=False, log=lambda s: None)
    return root / "tiny"


def downgrade(root: Path) -> None:
    """Rewrite ``root`` as the harness wrote it before: ``.pt`` model and mask files, no ``mask_file``."""
    for path in result_files(root):
        data = json.loads(path.read_text())
        if "model_file" not in data:
            continue
        for key in ("model_file", "mask_file"):
            new = root / data[key]["path"]
            old = new.with_suffix(".pt")
            torch.save(load_file(new), old)
            new.unlink()
            if key == "model_file":
                raw = old.read_bytes()
                data[key] = {"path": old.relative_to(root).as_posix(), "sha256": hashlib.sha256(raw).hexdigest(),
                             "bytes": len(raw), "format": LEGACY_FORMAT}
        del data["mask_file"]
        data["checksum"] = checksum(data)
        path.write_text(json.dumps(data, indent=2) + "\n")


def test_migrate_keeps_hashes_figures_and_tables_and_verifies_the_files(fresh: Path, tmp_path: Path,
                                                                         capsys) -> None:
    assert main(["table", str(fresh)]) == 0
    legacy = tmp_path / "tiny"
    shutil.copytree(fresh, legacy)
    downgrade(legacy)
    assert main(["validate", str(legacy)]) == 1
    assert "s2ap-bench migrate" in capsys.readouterr().err
    suite = build(SuiteConfig, QUICK)
    with pytest.raises(Exception, match="run s2ap-bench migrate"):  # never silently recomputed
        run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)
    assert main(["migrate", str(legacy)]) == 0
    assert "migrated 2 result(s)" in capsys.readouterr().out
    assert main(["validate", str(legacy)]) == 0
    assert not [p for p in legacy.rglob("*.pt") if "checkpoints" not in p.parts]  # dense caches stay checkpoints
    for before, after in zip(result_files(fresh), result_files(legacy), strict=True):
        a, b = json.loads(before.read_text()), json.loads(after.read_text())
        assert a["config_hash"] == b["config_hash"] and leaves(a) == leaves(b)  # every figure, the file records too
    assert main(["table", str(legacy)]) == 0
    for name in ("leaderboard.md", "details.md", "leaderboard.csv"):
        assert (legacy / name).read_bytes() == (fresh / name).read_bytes()
    assert main(["migrate", str(legacy)]) == 0 and "migrated 0 result(s)" in capsys.readouterr().out
    run_suite(suite, results_dir=tmp_path, progress=False, log=lambda s: None)  # every cell up to date
    assert [json.loads(p.read_text())["created"] for p in result_files(legacy)] == \
           [json.loads(p.read_text())["created"] for p in result_files(fresh)]


def test_migrate_refuses_a_dirty_git_tree_and_a_changed_file(fresh: Path, tmp_path: Path, capsys) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    legacy = tmp_path / "tiny"
    shutil.copytree(fresh, legacy)
    downgrade(legacy)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "results"], check=True)
    model = next(legacy.rglob("models/**/*.pt"))
    model.write_bytes(model.read_bytes() + b"x")
    assert main(["migrate", str(legacy)]) == 1
    assert "uncommitted changes" in capsys.readouterr().err
    subprocess.run([*git, "commit", "-qam", "tampered"], check=True)
    assert main(["migrate", str(legacy)]) == 1
    assert "does not match the sha256" in capsys.readouterr().err


def test_migrate_records_the_effective_sparsity_the_run_recorded(fresh: Path, tmp_path: Path, capsys) -> None:
    older = tmp_path / "tiny"
    shutil.copytree(fresh, older)
    for path in result_files(older):  # as written before 2026-12-02: no effective sparsity
        data = json.loads(path.read_text())
        if data["sparsity"].pop("effective", None) is not None:
            data["checksum"] = checksum(data)
            path.write_text(json.dumps(data, indent=2) + "\n")
    assert main(["validate", str(older)]) == 0
    assert main(["migrate", str(older)]) == 0
    assert "recorded the effective sparsity of 2 result(s)" in capsys.readouterr().out
    assert main(["validate", str(older)]) == 0
    cells = 0
    for before, after in zip(result_files(fresh), result_files(older), strict=True):
        a, b = json.loads(before.read_text()), json.loads(after.read_text())
        if "effective" in a["sparsity"]:
            cells += 1
            assert b["sparsity"]["effective"].pop("derived_from") == "model_file"
        assert leaves(a) == leaves(b)  # the run's own figure, exactly; nothing else changed
    assert cells == 2
    assert main(["migrate", str(older)]) == 0 and "effective sparsity of 0 result(s)" in capsys.readouterr().out
