"""The first minutes with the CLI: help without loading torch, --version, ls with descriptions and costs, and
thread counts that never oversubscribe by default (with advice that fixes the oversubscription it names)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    busy = 3  # runnable threads of other processes now: enough to occupy both cores
    assert busy_machine(1, 1, cores=2, load=1.2, running=busy) is None  # one core free, the other's load is its own
    assert busy_machine(1, 2, cores=2, load=0.3, running=busy) is None  # a passing burst: the average is low
    assert busy_machine(1, 1, cores=2, load=1.7, running=busy) is not None
    assert busy_machine(1, 2, cores=2, load=0.9, running=1) is not None
    assert "load average 1.7" in busy_machine(1, 1, cores=2, load=1.7, running=busy)
    assert "3 runnable thread(s) of other processes now" in busy_machine(1, 1, cores=2, load=1.7, running=busy)


def test_a_just_ended_command_or_our_own_start_up_is_not_a_busy_machine() -> None:
    """A high 1-minute load average left by a command that has just ended (or by this run's start-up) with nothing
    else runnable now is no warning; the same load with other work runnable now is."""
    assert busy_machine(1, 1, cores=2, load=6.5, running=0) is None
    assert busy_machine(1, 1, cores=2, load=6.5, running=1) is None  # one other thread: it has the free core
    assert busy_machine(1, 2, cores=2, load=6.5, running=1) is not None  # no core is free for it
    assert busy_machine(2, 1, cores=4, load=6.5, running=2.5) is None  # 2 free cores (+ half a core)
    assert busy_machine(2, 1, cores=4, load=6.5, running=3) is not None
    assert busy_machine(1, 1, cores=2, load=6.5, running=2) is not None


def test_our_own_threads_and_workers_are_not_other_work() -> None:
    """The runnable count leaves out this process tree: a spinning child (a worker) counts as ours, not as
    other work."""
    from benchmark.run.threads import others_running, own_running, process_tree

    if not Path("/proc/loadavg").exists():
        pytest.skip("no /proc (not Linux)")
    assert own_running() >= 1  # the thread reading its own state is running
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert child.pid in process_tree(os.getpid())
        deadline = time.monotonic() + 10
        while own_running() < 2 and time.monotonic() < deadline:  # until the child runs (or waits for a core)
            time.sleep(0.01)
        assert own_running() >= 2
        assert others_running(samples=3, interval=0.0) >= 0
    finally:
        child.kill()
        child.wait()
    assert child.pid not in process_tree(os.getpid())


def test_the_runnable_count_is_the_kernels_less_our_own(tmp_path: Path) -> None:
    """:func:`others_running` on a /proc of known content: the fourth field of loadavg less our R threads."""
    from benchmark.run.threads import others_running, own_running

    proc = tmp_path / "proc"
    for pid, ppid, states in ((1, 0, "S"), (10, 1, "RS"), (11, 10, "R"), (12, 1, "RR")):
        for i, state in enumerate(states):
            task = proc / str(pid) / "task" / str(pid * 100 + i)
            task.mkdir(parents=True)
            task.joinpath("stat").write_text(f"{pid} (x (y)) {state} {ppid} 0 0\n")
        (proc / str(pid) / "stat").write_text(f"{pid} (x (y)) {states[0]} {ppid} 0 0\n")
    (proc / "loadavg").write_text("6.50 5.00 4.00 5/300 999\n")
    assert own_running(10, proc) == 2  # process 10's running thread and its child 11
    assert own_running(12, proc) == 2
    # this test's own pid is not in the fake /proc: only the kernel's count minus nothing of ours
    assert others_running(samples=3, interval=0.0, proc=proc) == 5


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


def test_hypothesis_tests_are_derandomized_by_the_loaded_profile(pytestconfig: pytest.Config) -> None:
    """The fuzz tests inherit the profile of tests/conftest.py: the same examples on every run and in CI; a
    ``--hypothesis-seed`` given locally loads the seeded profile, so the seed is not ignored."""
    from hypothesis import settings

    from tests.hypothesis_profiles import hypothesis_profile
    from tests.test_hostile_config import FUZZ as CONFIG_FUZZ
    from tests.test_hostile_results import FUZZ as RESULTS_FUZZ
    from tests.test_result_reading import CHECKS

    if pytestconfig.getoption("--hypothesis-profile", None):
        pytest.skip("an explicit --hypothesis-profile is in force")
    fixed = hypothesis_profile(os.environ, pytestconfig.getoption("--hypothesis-seed", None)) != "seeded"
    assert settings.default.database is None
    for s in (settings.default, CONFIG_FUZZ, RESULTS_FUZZ, CHECKS):
        assert s.derandomize is fixed


def test_the_profile_follows_ci_and_the_seed() -> None:
    from tests.hypothesis_profiles import hypothesis_profile

    assert hypothesis_profile({}) == "default" and hypothesis_profile({"CI": "false"}) == "default"
    assert hypothesis_profile({}, 2) == "seeded" and hypothesis_profile({}, "abc") == "seeded"
    assert hypothesis_profile({"CI": "true"}) == "ci" and hypothesis_profile({"CI": "1"}, 2) == "ci"


@pytest.mark.slow
def test_a_local_seed_draws_other_examples(tmp_path: Path) -> None:
    """``pytest --hypothesis-seed N`` (without CI) draws examples fixed by N: two seeds, two draws, one seed the
    same draw twice, and no seed the default profile's fixed draw (a probe test under the project's conftest)."""
    (tmp_path / "conftest.py").write_text("from tests.hypothesis_profiles import pytest_configure  # noqa: F401\n")
    (tmp_path / "test_probe.py").write_text(
        "import os\n\nfrom hypothesis import given, strategies as st\n\n\n"
        "@given(st.integers(0, 10**9))\n"
        "def test_draw(x):\n"
        "    with open(os.environ['PROBE_OUT'], 'a') as f:\n"
        "        f.write(f'{x}\\n')\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    draws = []
    for seed in ("1", "2", "1", None, None):  # a few seconds each: the probe imports no torch
        out = tmp_path / f"draws-{len(draws)}.txt"
        args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                str(tmp_path / "test_probe.py")] + (["--hypothesis-seed", seed] if seed else [])
        done = subprocess.run(args, cwd=tmp_path, timeout=300, env={**env, "PROBE_OUT": str(out)},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:]
        draws.append(out.read_text().split())
    assert draws[0] == draws[2] and draws[0] != draws[1]
    assert draws[3] == draws[4] and draws[3] not in (draws[0], draws[1])


def test_the_ci_profile_is_loaded_when_ci_is_set() -> None:
    code = ("import os; os.environ['CI'] = 'true'\n"
            "import tests.conftest\n"
            "from hypothesis import settings\n"
            "print(settings.default.derandomize, settings.default.database, settings.default.print_blob)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "None", "True"], done.stderr[-2000:]
