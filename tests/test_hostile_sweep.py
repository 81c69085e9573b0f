"""The hostile-input sweep CI runs (well under a minute): hostile configs and result files through the command
line, each asserting its exit code, a one-line message, and that no file outside the results folder changed.

Everything happens in a sandbox three folders deep, with the results folder inside it and the working
directory beside it, so an escape through ``..`` or a relative path would land in the sandbox and be seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import pytest
import yaml

from benchmark.cli import main
from tests.conftest import tiny_suite_dict
from tests.test_hostile_config import alias_bomb, doubling_bomb
from tests.test_hostile_results import MALFORMED, RAW
from tests.test_report import make_result, write_suite

NO_AA = {**tiny_suite_dict()["evaluation"], "autoattack": "none"}


def suite(**changes) -> dict:
    return tiny_suite_dict(**{"evaluation": NO_AA, **changes})


CONFIGS: dict[str, tuple[str, list[str], int, str]] = {
    # name: (suite file text, extra CLI arguments, exit code, text in the one line)
    "empty label": (yaml.safe_dump(suite(methods=[{"method": "hydra", "label": ""}])), [], 2, "label"),
    "label ../..": (yaml.safe_dump(suite(methods=[{"method": "hydra", "label": "../.."}])), [], 2, "label"),
    "absolute label": (yaml.safe_dump(suite(methods=[{"method": "hydra", "label": "/tmp/x"}])), [], 2, "label"),
    "suite ..": (yaml.safe_dump(suite(name="..")), [], 2, "'name'"),
    "suite .": (yaml.safe_dump(suite(name=".")), [], 2, "'name'"),
    "absolute results_dir": (yaml.safe_dump(suite(results_dir="/tmp/elsewhere")), [], 2, "results_dir"),
    "alias bomb": (alias_bomb() + "".join(f"{k}: {json.dumps(v)}\n" for k, v in suite().items() if k != "name"),
                   [], 2, "aliases"),
    "doubling bomb": (doubling_bomb(), [], 2, "aliases are expanded"),
    "deep nesting": ("a: " + "[" * 20000 + "]" * 20000, [], 2, "nested too deeply"),
    "huge file": ("description: '" + "x" * 300_000 + "'\n", [], 2, "larger than a suite"),
    "python tag": ("name: !!python/object/apply:os.system ['touch pwned']\n", [], 2, "not valid YAML"),
    "not a mapping": ("- 1\n- 2\n", [], 2, "must be a YAML mapping"),
    "NaN gamma": (yaml.safe_dump(suite(methods=[{"method": "hydra+s2ap", "s2ap": {"gamma": math.nan}}])), [], 2,
                  "gamma"),
    "inf lr": (yaml.safe_dump(suite()), ["--set", "search.lr=.inf"], 2, "search.lr"),
    "NaN weight decay": (yaml.safe_dump(suite()), ["--set", "finetune.weight_decay=.nan"], 2, "weight_decay"),
    "NaN trades beta": (yaml.safe_dump(suite()), ["--set", "pretrain.trades_beta=.nan"], 2, "trades_beta"),
    "seed 2^32": (yaml.safe_dump(suite()), ["--seeds", "4294967296"], 2, "seeds"),
    "absurd batch": (yaml.safe_dump(suite()), ["--set", "search.batch_size=1000000000"], 2, "batch_size"),
    "unknown pruner option": (yaml.safe_dump(suite(methods=[{"method": "hydra", "options": {"foo": 1}}])), [], 2,
                              "unknown option 'foo'"),
    "bad HARP init": (yaml.safe_dump(suite(methods=[{"method": "harp", "options": {"init": "zeros"}}])), [], 2,
                      "init"),
    "duplicate sparsity": (yaml.safe_dump(suite()), ["--sparsities", "0.9,0.9"], 2, "twice"),
    "override into a list": (yaml.safe_dump(suite()), ["--set", "methods.0.label=x"], 2, "does not name a field"),
    "label with a newline": (yaml.safe_dump(suite(methods=[{"method": "hydra", "label": "a\nb"}])), [], 2, "label"),
}


def snapshot(sandbox: Path, results: Path) -> dict[str, str]:
    """Every file and folder of the sandbox outside the results folder, with a digest of each file."""
    out = {}
    for p in sorted(sandbox.rglob("*")):
        if p == results or results in p.parents:
            continue
        out[str(p.relative_to(sandbox))] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch) -> tuple[Path, Path, Path]:
    work = tmp_path / "a" / "b" / "c"
    results = work / "results"
    results.mkdir(parents=True)
    (tmp_path / "a" / "keep.txt").write_text("must not change")
    monkeypatch.chdir(work)
    return tmp_path, work, results


def one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_hostile_sweep(sandbox: tuple[Path, Path, Path], capsys) -> None:
    root, work, results = sandbox
    start = time.perf_counter()
    configs = root / "configs"  # outside the sandbox's working directory, written before the snapshot
    configs.mkdir()
    before = snapshot(root, results) | {"configs": "dir"}
    for i, (name, (text, extra, code, needle)) in enumerate(CONFIGS.items()):
        path = configs / f"case{i}.yaml"
        path.write_text(text)
        before[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        where = [] if name == "absolute results_dir" else ["--results-dir", str(results)]  # the suite's own
        got = main(["run", str(path), "--no-progress", *where, *extra])
        captured = capsys.readouterr()
        line = one_line(captured.err)
        assert got == code, (name, line)
        assert needle in line and line.startswith("s2ap-bench: error: "), (name, line)
        assert snapshot(root, results) == before, name
        assert not any(results.iterdir()), name  # refused at load time: nothing started

    # sparsities that print alike: two cells, two files
    path = configs / "alike.yaml"
    path.write_text(yaml.safe_dump(suite()))
    before[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert main(["run", str(path), "--sparsities", "0.9,0.9000001", "--dry-run", "--results-dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "hydra/unstructured-s0.9-seed0" in out and "hydra/unstructured-s0.9000001-seed0" in out

    # hostile result files: named and skipped by validate, table and report; the tables are written inside
    folder = results / "tiny"
    write_suite(folder, [make_result("hydra", 0.9, s) for s in range(2)])
    bad = folder / "digits" / "digits_cnn" / "bad"
    bad.mkdir()
    for i, data in enumerate([*MALFORMED.values(), *RAW.values()]):
        raw = data if isinstance(data, bytes) else (json.dumps(data) if isinstance(data, dict) else data).encode()
        (bad / f"case{i}.json").write_bytes(raw)
    (bad / "folder.json").mkdir()  # not a regular file: not a result, neither counted nor named
    n_bad = len(MALFORMED) + len(RAW)
    assert main(["validate", str(folder)]) == 1
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == n_bad and "Traceback" not in captured.err
    for command in ("table", "report"):
        assert main([command, str(folder)]) == 0
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == n_bad and "Traceback" not in err
    assert (folder / "leaderboard.md").is_file() and (folder / "index.html").is_file()
    assert main(["validate", str(results / "missing")]) == 1
    one_line(capsys.readouterr().err)
    assert snapshot(root, results) == before
    assert time.perf_counter() - start < 60
