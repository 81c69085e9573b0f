"""scripts/gpu_check.py: the one-call GPU check, its logic run on the CPU (``--device cpu --quick``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
STEPS = ["environment", "gpu_tests", "training_bf16", "training_fp32", "autoattack", "s2ap", "cost", "profile"]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


script = load_script()


@pytest.mark.slow
def test_quick_cpu_run_records_every_step_with_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(out),
                           "--budget", "150"], capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report) == {"schema", "command", "device", "quick", "budget_s", "started_utc", "finished_utc",
                           "wall_s", "complete", "gpu_name", "sizes", "steps", "goals"}
    assert report["schema"] == script.SCHEMA and report["device"] == "cpu" and report["quick"] is True
    assert report["complete"] is True and 0 < report["wall_s"] < 150
    assert list(report["steps"]) == STEPS
    for name, step in report["steps"].items():
        assert set(step) >= {"status", "seconds", "budget_s", "figures", "reason"}, name
        assert step["status"] in script.STATUSES and isinstance(step["seconds"], float), name
        assert step["budget_s"] == script.BUDGETS[name]
        if step["status"] == "ok":
            assert isinstance(step["figures"], dict) and step["figures"] and step["reason"] is None, name
        else:
            assert isinstance(step["reason"], str) and step["reason"], name
        assert step["status"] == "ok", (name, step["reason"])  # on the CPU every step runs

    steps = {name: s["figures"] for name, s in report["steps"].items()}
    env_f = steps["environment"]
    assert env_f["torch"] == torch.__version__ and env_f["cuda_available"] is torch.cuda.is_available()
    assert isinstance(env_f["nvidia_smi"], dict) and report["gpu_name"] == env_f["name"]
    for name, bf16 in (("training_bf16", True), ("training_fp32", False)):
        f = steps[name]
        assert f["bf16"] is bf16 and f["channels_last"] is bf16 and f["autoattack"] is None
        assert f["model"] == "tiny_resnet" and f["images_per_repeat"] == 16 and f["attack_steps"] == 2
        rate = f["training"]["images_per_s"]
        assert rate["harness"] > 0 and rate["bare"] > 0
        assert f["training"]["ratio"] == pytest.approx(rate["harness"] / rate["bare"])
    aa = steps["autoattack"]
    assert aa["training"] is None and aa["autoattack"]["version"] == "standard"
    assert aa["autoattack"]["n_examples"] == 8 and aa["points_per_s"]["harness"] > 0
    tests = steps["gpu_tests"]
    assert tests["collected"] == tests["passed"] + tests["failed"] + tests["error"] + tests["skipped"] >= 3
    sync = [c for c in tests["cases"] if script.SYNC_TEST in c["id"]]
    assert len(sync) == 2  # hydra and harp
    if not torch.cuda.is_available():
        assert all(c["outcome"] == "skipped" for c in tests["cases"]) and tests["returncode"] == 0
    arms = steps["s2ap"]["median_s_per_epoch"]
    assert len(arms) >= 5 and set(arms) == set(steps["s2ap"]["ratio_to_base"]) and all(t > 0 for t in arms.values())
    assert steps["s2ap"]["clock"] == "wall" and steps["s2ap"]["ratio_to_base"]["hydra"] == 1.0
    cost = steps["cost"]
    assert cost["cells"] == 36 and cost["seeds"] == 3
    assert cost["total_hours"] > 0
    assert cost["total_hours"] == pytest.approx(sum(cost["seconds_by_phase"].values()) / 3600)
    assert cost["dry_run_total_line"].startswith("total left ~")

    goals = report["goals"]
    assert set(goals) == {"bf16_training_images_per_s", "harness_vs_bare", "no_host_sync_in_mask"}
    assert all(g["status"] in script.GOAL_STATUSES and g["target"] and g["detail"] for g in goals.values())
    assert goals["bf16_training_images_per_s"]["value"] == steps["training_bf16"]["training"]["images_per_s"]["harness"]
    assert goals["bf16_training_images_per_s"]["status"] == "missed"  # a tiny model on a CPU
    ratios = [steps["training_fp32"]["training"]["ratio"], steps["training_bf16"]["training"]["ratio"],
              aa["autoattack"]["ratio"]]
    assert goals["harness_vs_bare"]["value"] == pytest.approx(min(ratios))
    if not torch.cuda.is_available():
        assert goals["no_host_sync_in_mask"]["status"] == "not measured"

    prof = steps["profile"]
    assert "bf16" in prof["targets"]["training"] and prof["targets"]["mask"] == ["hydra", "harp"]
    runs = [r for arms in prof["training"].values() for r in arms.values()]
    runs += [r for phases in prof["mask"].values() for r in phases.values()]
    assert len(runs) >= 2 + 4
    for r in runs:
        assert r["wall_s"] > 0 and isinstance(r["sync_ops"], dict) and r["top_ops"]
        assert all(isinstance(op["name"], str) and op["calls"] >= 1 for op in r["top_ops"])
    assert set(prof["training"]["bf16"]) == {"harness", "bare"}
    assert set(prof["mask"]["hydra"]) == {"search", "finetune"}

    text = (out / "summary.md").read_text()
    assert "Quick run" in text and all(f"| {name} | ok |" in text for name in STEPS)
    assert "cifar10-paper estimate" in text and (out / "gpu_tests.xml").exists()


def test_a_step_that_fails_or_runs_out_of_time_is_recorded_and_not_fatal(tmp_path: Path) -> None:
    def child(run):
        return lambda timeout: script.in_child(run, timeout, tmp_path, "step")

    far = time.monotonic() + 100
    start = time.monotonic()
    slow = script.record(child(lambda: time.sleep(60) or {"never": 1}), 1.0, far)
    assert slow["status"] == "timed_out" and "1 s budget" in slow["reason"] and slow["figures"] is None
    assert time.monotonic() - start < 20
    broken = script.record(child(lambda: {"x": 1 / 0}), 10.0, far)
    assert broken["status"] == "failed" and broken["reason"] == "ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in broken["traceback"]
    empty = script.record(child(lambda: {}), 10.0, far)
    assert empty["status"] == "failed" and empty["reason"] == "the step returned no figures"
    fine = script.record(child(lambda: {"value": float("inf"), "pair": (1, 2)}), 10.0, far)
    assert fine["status"] == "ok" and fine["figures"] == {"value": None, "pair": [1, 2]}  # JSON-safe
    spent = script.record(child(lambda: {"x": 1}), 10.0, time.monotonic() + 2)
    assert spent["status"] == "skipped" and "global time budget" in spent["reason"]


def test_step_timeout_is_its_budget_or_what_the_global_budget_leaves() -> None:
    assert script.step_timeout(60, deadline=1000, now=0) == 60
    assert script.step_timeout(60, deadline=100, now=50) == 50 - script.WRITE_RESERVE_S
    assert script.step_timeout(60, deadline=100, now=99) == 0
    assert sum(script.BUDGETS.values()) <= script.GLOBAL_BUDGET_S  # the steps fit in 8 minutes


def test_a_missing_import_is_one_line_and_exit_2(monkeypatch, capsys) -> None:
    assert script.missing_modules(("json", "no_such_module_s2ap")) == ["no_such_module_s2ap"]
    monkeypatch.setattr(script, "REQUIRED", ("json", "no_such_module_s2ap", "another_missing_one"))
    assert script.main(["--device", "cpu", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no_such_module_s2ap, another_missing_one" in err and "installs nothing" in err
    assert script.main(["--budget", "1"]) == 2 and "--budget" in capsys.readouterr().err


def _case(name: str, outcome: str) -> dict:
    return {"id": f"tests.test_fidelity::{name}", "outcome": outcome, "seconds": 0.1, "message": ""}


def _steps(bf16_rate: float, ratios: dict[str, float], sync: str) -> dict:
    def ok(figures):
        return {"status": "ok", "figures": figures, "reason": None}

    def training(ratio):
        return {"training": {"images_per_s": {"harness": bf16_rate, "bare": bf16_rate / ratio}, "ratio": ratio}}

    cases = [_case(f"{script.SYNC_TEST}[{m}]", sync) for m in ("hydra", "harp")] + [_case("test_other", "passed")]
    return {"training_bf16": ok(training(ratios["bf16"])), "training_fp32": ok(training(ratios["fp32"])),
            "autoattack": ok({"autoattack": {"ratio": ratios["aa"]}}), "gpu_tests": ok({"cases": cases})}


def test_goals_and_what_is_profiled_when_one_is_missed() -> None:
    met = script.goals(_steps(9000.0, {"bf16": 0.97, "fp32": 0.99, "aa": 1.01}, "passed"))
    assert [g["status"] for g in met.values()] == ["met", "met", "met"]
    assert met["harness_vs_bare"]["value"] == 0.97 and met["no_host_sync_in_mask"]["value"] == 0
    assert script.profile_targets(met, _steps(9000.0, {"bf16": 0.97, "fp32": 0.99, "aa": 1.01}, "passed")) == \
        {"training": [], "mask": []}

    steps = _steps(7000.0, {"bf16": 0.97, "fp32": 0.90, "aa": 1.0}, "failed")
    missed = script.goals(steps)
    assert missed["bf16_training_images_per_s"] == {
        "target": ">= 8,000 images/s (harness, PGD-10 training, bf16 + channels_last)", "value": 7000.0,
        "status": "missed", "detail": "7,000.0 images/s"}
    assert missed["harness_vs_bare"]["status"] == "missed" and missed["harness_vs_bare"]["value"] == 0.90
    assert missed["no_host_sync_in_mask"]["status"] == "missed" and missed["no_host_sync_in_mask"]["value"] == 2
    assert script.profile_targets(missed, steps) == {"training": ["bf16", "fp32"], "mask": ["hydra", "harp"]}

    skipped = _steps(9000.0, {"bf16": 1.0, "fp32": 1.0, "aa": 1.0}, "skipped")
    skipped["training_fp32"] = {"status": "timed_out", "figures": None, "reason": "ran past its 60 s budget"}
    goal = script.goals(skipped)
    assert goal["no_host_sync_in_mask"]["status"] == "not measured"
    assert goal["harness_vs_bare"]["detail"] == "training_bf16 1.000x, autoattack 1.000x"  # what ran
    assert script.profile_targets(goal, skipped) == {"training": [], "mask": ["hydra", "harp"]}


def test_the_sync_goal_names_a_gpu_test_that_exists() -> None:
    files = script.gpu_test_files()
    assert ROOT / "tests" / "test_fidelity.py" in files and ROOT / "tests" / "test_bench.py" in files
    assert any(f"def {script.SYNC_TEST}(" in f.read_text() for f in files)


def test_default_folder_is_dated_and_named_after_the_gpu() -> None:
    import datetime

    out = script.default_out("NVIDIA H200", datetime.date(2026, 12, 1))
    assert out == ROOT / "results" / "gpu" / "2026-12-01-nvidia-h200"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer on a machine without CUDA")
def test_cuda_asked_where_there_is_none_is_one_line_and_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    assert script.main(["--device", "cuda", "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no CUDA device" in err and "--device cpu --quick" in err
    assert not (tmp_path / "gpu" / "gpu_check.json").exists() or \
        json.loads((tmp_path / "gpu" / "gpu_check.json").read_text())["steps"]["environment"]["status"] == "ok"


@pytest.mark.slow
def test_only_runs_the_chosen_steps_and_records_the_others(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    assert script.main(["--device", "cpu", "--quick", "--only", "nonsense,cost"]) == 2
    assert "unknown step(s) nonsense" in capsys.readouterr().err
    assert script.main(["--device", "cpu", "--quick", "--only", "cost,profile", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    ran = {name for name, s in report["steps"].items() if s["status"] == "ok"}
    assert ran == {"environment", "cost", "profile"}  # the mask is profiled: no sync test proved it clean
    assert report["steps"]["profile"]["figures"]["targets"] == {"training": [], "mask": ["hydra", "harp"]}
    assert all(s["reason"] == script.NOT_CHOSEN for name, s in report["steps"].items() if name not in ran)
    assert report["complete"] is True and report["goals"]["harness_vs_bare"]["status"] == "not measured"
