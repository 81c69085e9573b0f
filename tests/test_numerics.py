"""The numerics a result records (kernel path, BLAS, oneDNN, threads, CPU), ``verify``'s verdicts (bit-identical
only on matching numerics, else within the measured noise or "cannot tell"), and the noise measurement: a tiny cell
recomputed in child processes under another kernel path."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.cli import main
from benchmark.config import SuiteConfig, build
from benchmark.errors import BenchmarkError
from benchmark.measure import environment
from benchmark.report.significance import effects_beside_noise
from benchmark.run.noise import Noise, Setting, parse_setting
from benchmark.run.suite import run_suite
from benchmark.run.verify import CellCheck, Difference, numerics_differences, verdict
from benchmark.store.results import read_result, result_files, write_result
from tests.conftest import cell_files, tiny_suite_dict
from tests.test_significance import _suite


def test_every_result_records_the_numerics_that_decide_its_last_bits() -> None:
    record = environment(torch.device("cpu"))["numerics"]
    config = torch.__config__.show()
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["threads"] == torch.get_num_threads() and record["cpu_model"]
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    assert record["blas"].split()[0] == (blas.group(1) if blas else None)
    if torch.backends.mkldnn.is_available():
        assert record["onednn"].startswith("v") and record["onednn"] in config
    assert len(json.dumps(record)) < 300  # small and plain


def _env(capability: str = "AVX512", threads: int = 1) -> dict:
    return {"environment": {"packages": {"torch": "2.13.0"},
                            "numerics": {"cpu_capability": capability, "blas": "mkl 2024.2", "lapack": "mkl",
                                         "onednn": "v3.12.0", "threads": threads, "cpu_model": "X"}}}


def _check(stored: dict, fresh: dict, numerics: list[str] | None, noise: Noise | None = None) -> CellCheck:
    diffs = [Difference(p, v, fresh.get(p)) for p, v in stored.items() if abs(v - fresh.get(p, 1e9)) > 1e-6]
    return CellCheck("c.json", stored, fresh, len(stored), diffs, numerics, noise)


def test_verify_says_bit_identical_only_on_matching_numerics() -> None:
    assert numerics_differences(_env(), _env()) == []
    assert numerics_differences(_env(), _env("AVX2", 2)) == ["cpu_capability AVX512 stored, AVX2 here",
                                                            "threads 1 stored, 2 here"]
    assert numerics_differences({"environment": {}}, _env()) is None  # an older result: unknown
    aa = "evaluation.autoattack.robust_accuracy"
    stored = {aa: 0.20, "evaluation.clean_accuracy": 0.50}
    assert verdict(_check(stored, dict(stored), []), 1e-6).startswith("bit-identical on the same numerics")
    assert verdict(_check(stored, {**stored, aa: 0.2 + 1e-9}, []), 1e-6).startswith("reproduced within 1e-06")
    assert verdict(_check(stored, {**stored, aa: 0.34}, []), 1e-6).startswith("NOT reproduced: 1 differences")
    other = ["cpu_capability AVX512 stored, AVX2 here"]
    same = verdict(_check(stored, dict(stored), other), 1e-6)
    assert "bit-identical" not in same and "the numerics differ: cpu_capability AVX512 stored, AVX2 here" in same
    moved = {**stored, aa: 0.34}
    assert verdict(_check(stored, moved, other), 1e-6).startswith("cannot tell: 1 differences")
    assert "cannot tell" in verdict(_check(stored, moved, None), 1e-6) and "records no numerics" in verdict(
        _check(stored, moved, None), 1e-6)
    wide = Noise([Setting(), Setting("default")], [{aa: 0.34}, {aa: 0.18}], [{}, {}])  # spread 0.16 >= 0.14
    narrow = Noise([Setting(), Setting("default")], [{aa: 0.34}, {aa: 0.30}], [{}, {}])
    assert verdict(_check(stored, moved, other, wide), 1e-6).startswith("1 differences, all within the noise")
    assert verdict(_check(stored, moved, other, narrow), 1e-6).startswith("1 of 1 differences beyond the noise")


def test_noise_settings_parse_or_say_what_to_give() -> None:
    assert parse_setting("native") == Setting() and parse_setting("capability=AVX2") == Setting("avx2")
    assert parse_setting("capability=default, threads=2") == Setting("default", 2)
    assert Setting("default", 2).name == "capability=default, threads=2" and Setting().name == "native"
    for bad in ("capability=sse9", "threads=0", "speed=2", ""):
        with pytest.raises(BenchmarkError, match="give native, capability=NAME"):
            parse_setting(bad)


def test_effects_are_shown_beside_the_noise_of_the_cell() -> None:
    results = [{**r, "_path": f"{r['cell']['label']}-{r['cell']['seed']}.json"} for r in _suite()]
    cell = next(r for r in results if r["cell"]["label"] == "hydra+s2ap")
    lines = effects_beside_noise(results, cell, {"evaluation.autoattack.robust_accuracy": 0.14,
                                                 "evaluation.clean_accuracy": 0.0})
    assert lines[0] == ("hydra+s2ap - hydra at 90%, AutoAttack: +10.0 pp [+9.0, +11.0], significant; noise of this "
                        "cell's AutoAttack: 14.0 pp")
    assert len(lines) == 3 and lines[1].endswith("noise of this cell's clean: 0.0 pp")  # + hydra+s2ap vs random


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results")
    suite = tiny_suite_dict(pretrain={"epochs": 1, "lr": 0.05, "batch_size": 128},
                            search={"epochs": 1, "lr": 0.1, "batch_size": 128})
    run_suite(build(SuiteConfig, suite), results_dir=root, progress=False, log=lambda s: None)
    return root / "tiny"


@pytest.mark.slow
def test_verify_on_other_recorded_numerics_does_not_claim_bit_identity(finished: Path, tmp_path: Path,
                                                                       capsys) -> None:
    copy = tmp_path / "tiny"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (path,) = cell_files(copy)
    assert main(["verify", str(copy), "--cell", "hydra/unstructured-s0.9-seed0"]) == 0
    assert "bit-identical on the same numerics" in capsys.readouterr().out
    data = json.loads(path.read_text())
    data["environment"]["numerics"]["cpu_capability"] = "ZVECTOR"  # as if computed on another kind of machine
    write_result(path, {k: v for k, v in data.items() if k != "checksum"})
    assert main(["verify", str(copy), "--cell", "hydra/unstructured-s0.9-seed0"]) == 0
    out = capsys.readouterr().out
    assert "bit-identical" not in out and "the numerics differ: cpu_capability ZVECTOR stored" in out


@pytest.mark.slow
def test_noise_recomputes_a_tiny_cell_under_another_kernel_path(finished: Path, tmp_path: Path, capsys) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    code = main(["verify", str(finished), "--cell", "hydra/unstructured-s0.9-seed0", "--keep", str(keep), "--noise",
                 "native", "capability=default"])
    out = capsys.readouterr().out
    fresh = [read_result(p) for p in result_files(keep) if p.parent.name != "dense"]
    assert len(fresh) == 2  # one recomputation per setting, each in its own child process
    capabilities = [r["environment"]["numerics"]["cpu_capability"] for r in fresh]
    assert "DEFAULT" in capabilities
    assert "noise over 2 settings" in out and "| capability=default |" in out and "| DEFAULT" in out
    aa = [r["evaluation"]["autoattack"]["robust_accuracy"] for r in fresh]
    spread_row = next(line for line in out.splitlines() if line.startswith("| spread (max - min)"))
    assert f"{abs(aa[0] - aa[1]):.6g}" in spread_row
    # the native recomputation is the one compared: the same numerics as the stored result, made here
    assert code == 0 and "bit-identical on the same numerics" in out
