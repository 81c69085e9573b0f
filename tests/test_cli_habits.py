"""The first minutes with the CLI: help without loading torch, --version, ls with descriptions and costs, and
thread counts that never oversubscribe by default (with advice that fixes the oversubscription it names)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.cli import main, parser
from benchmark.run.threads import busy_machine, default_threads, oversubscription, resolve_threads

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = [["run"], ["ls"], ["table"], ["report"], ["bench"], ["bench", "s2ap"], ["bench", "speed"],
               ["evaluate"], ["verify"], ["validate"]]


def test_help_of_every_command_does_not_import_torch() -> None:
    """`--help` answers without importing torch (what made it take 6-11 s), for the program and each command."""
    probe = ("import sys, runpy\n"
             "for argv in {argvs!r}:\n"
             "    sys.argv = ['s2ap-bench', *argv, '--help']\n"
             "    try:\n"
             "        runpy.run_module('benchmark.cli', run_name='__main__')\n"
             "    except SystemExit as e:\n"
             "        assert e.code == 0, (argv, e.code)\n"
             "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')\n")
    code = probe.format(argvs=[[]] + SUBCOMMANDS)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "torch not loaded"
    assert "usage: s2ap-bench" in done.stdout


def test_import_benchmark_does_not_load_torch() -> None:
    code = "import sys, benchmark, benchmark.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "False", done.stderr[-2000:]


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("s2ap-bench ")


def test_every_computing_command_takes_threads() -> None:
    for argv in (["run"], ["evaluate", "m.pt", "--method", "x"], ["verify", "results/digits-smoke"],
                 ["bench", "s2ap"], ["bench", "speed"]):
        assert parser().parse_args([*argv, "--threads", "3"]).threads == 3, argv


def test_ls_gives_one_line_per_name_and_the_cost_of_each_suite(capsys) -> None:
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name in ("hydra", "hydra+s2ap", "digits_cnn", "digits", "digits-quick"):
        (line,) = [x for x in lines if x.split()[:1] == [name]]
        assert len(line.split()) > 3, line  # a description follows the name
    suites = out[out.index("suites:"):].splitlines()[1:]
    costs = [x for x in suites if x.strip().startswith("cost:")]
    assert costs and len(costs) * 2 == len(suites) and all(" cells, " in x and "passes" in x for x in costs)


def test_one_thread_per_worker_unless_asked(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == default_threads(4) == resolve_threads(None, 2) == 1
    assert resolve_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads(None) == 2


def test_oversubscription_advice_fixes_what_it_names() -> None:
    assert oversubscription(1, 2, cores=2) is None
    for threads, workers in ((1, 3), (2, 2), (4, 1), (2, 3)):
        text = oversubscription(threads, workers, cores=2)
        assert text is not None
        fix = text[text.index("(try ") + 5:-1].split()
        new_workers = int(fix[fix.index("--workers") + 1]) if "--workers" in fix else workers
        new_threads = int(fix[fix.index("--threads") + 1]) if "--threads" in fix else threads
        assert (new_workers, new_threads) != (workers, threads) and new_workers * new_threads <= 2, text
    assert "--threads 1" not in oversubscription(1, 3, cores=2)


def test_busy_machine_warns_when_the_load_leaves_too_few_cores() -> None:
    assert busy_machine(1, 1, cores=2, load=1.2) is None  # one core free, the other's load is its own
    assert busy_machine(1, 2, cores=2, load=0.3) is None
    assert busy_machine(1, 1, cores=2, load=1.7) is not None
    assert busy_machine(1, 2, cores=2, load=0.9) is not None
    assert "load average 1.7" in busy_machine(1, 1, cores=2, load=1.7)


class _Stop(Exception):
    pass


def test_verify_recomputes_with_the_recorded_threads(monkeypatch, tmp_path: Path) -> None:
    """verify sets the recorded count and run_suite keeps it (it used to re-resolve it to the default)."""
    import copy
    import json

    import torch

    import benchmark.run.suite
    from benchmark.run.verify import recompute

    (path,) = sorted((ROOT / "results" / "digits-smoke").glob("digits/digits_cnn/hydra/unstructured-s0.9-seed0.json"))
    result = json.loads(path.read_text())
    seen = []

    def fake_run_suite(suite, *, threads=None, **kwargs):
        seen.append((threads, torch.get_num_threads()))
        raise _Stop

    monkeypatch.setattr(benchmark.run.suite, "run_suite", fake_run_suite)
    before = torch.get_num_threads()
    for recorded, asked, expected in ((3, None, 3), (3, 2, 2), (None, None, 1)):
        r = copy.deepcopy(result)
        r["environment"]["machine"]["torch_threads"] = recorded
        with pytest.raises(_Stop):
            recompute(r, tmp_path, "cpu", asked)
        assert seen[-1] == (expected, expected) and torch.get_num_threads() == before


def test_hypothesis_tests_are_derandomized_by_the_loaded_profile() -> None:
    """The fuzz tests inherit the profile of tests/conftest.py: the same examples on every run and in CI."""
    from hypothesis import settings

    from tests.test_hostile_config import FUZZ as CONFIG_FUZZ
    from tests.test_hostile_results import FUZZ as RESULTS_FUZZ

    assert settings.default.derandomize and settings.default.database is None
    assert CONFIG_FUZZ.derandomize and RESULTS_FUZZ.derandomize


def test_the_ci_profile_is_loaded_when_ci_is_set() -> None:
    code = ("import os; os.environ['CI'] = 'true'\n"
            "import tests.conftest\n"
            "from hypothesis import settings\n"
            "print(settings.default.derandomize, settings.default.database, settings.default.print_blob)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "None", "True"], done.stderr[-2000:]
