"""``s2ap-bench sweep``: the selection reads only the validation split, follows it, and the test stage runs the
selected value."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import benchmark.run.suite as suite_module
from benchmark.cli import main
from benchmark.config import ConfigError, SuiteConfig, build
from benchmark.config.sweeps import parse_grid, sweep_of
from benchmark.run.cells import load_data
from benchmark.run.sweep import Point, final_suites, plan_lines, record_path, run_sweep, select, t975
from benchmark.store.paths import result_path, suite_dir
from benchmark.store.results import load_results, read_result
from tests.conftest import S2AP_ARM, tiny_suite_dict

GRID = [0.01, 0.5]


def sweep_suite(tmp_path: Path) -> SuiteConfig:
    d = tiny_suite_dict(
        name="sw", methods=["hydra", {"method": "hydra+s2ap", "s2ap": {"gamma": 0.05, "warmup_epochs": 0}}],
        search={**tiny_suite_dict()["search"], "epochs": 1},
        evaluation={**tiny_suite_dict()["evaluation"], "autoattack": "none"},
        sweep={"grid": {"s2ap.gamma": GRID}, "seeds": [0]})
    return build(SuiteConfig, d)


class Counted(Dataset):
    """A split that counts every point read from it (and can serve other points instead)."""

    def __init__(self, inner: Dataset, replace: Dataset | None = None) -> None:
        self.inner, self.replace, self.reads = inner, replace, 0

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        self.reads += 1
        return (self.replace or self.inner)[i]


class Noise(Dataset):
    """Random images and labels of the shape of ``like``: a poisoned split."""

    def __init__(self, like: Dataset) -> None:
        x, _ = like[0]
        gen = torch.Generator().manual_seed(123)
        self.x = torch.rand((len(like), *x.shape), generator=gen)  # type: ignore[arg-type]
        self.y = torch.randint(0, 10, (len(like),), generator=gen)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 5, 9, 30, 31, 60, 200):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-3)


def test_selection_takes_the_best_mean_and_the_first_among_equals() -> None:
    pts = [Point(0.01, (0, 1), (0.5, 0.7)), Point(0.05, (0, 1), (0.7, 0.5)), Point(0.1, (0, 1), (0.4, 0.6))]
    assert select(pts).value == 0.01  # 0.6 twice: the first in grid order
    pts[2] = Point(0.1, (0, 1), (0.6, 0.62))
    assert select(pts).value == 0.1
    low, high = pts[0].interval  # type: ignore[misc]
    assert (low + high) / 2 == pytest.approx(0.6) and high - 0.6 == pytest.approx(12.706 * 0.1414214 / 2 ** 0.5,
                                                                                      rel=1e-5)


def test_the_test_points_never_enter_the_selection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = sweep_suite(tmp_path)
    real = load_data(s)
    splits: dict = {}

    def patched(suite):
        data = load_data(suite)
        splits["test"] = Counted(data.test, splits.get("test_replace"))
        splits["val"] = Counted(data.val, splits.get("val_replace"))
        return dataclasses.replace(data, test=splits["test"], val=splits["val"])

    monkeypatch.setattr(suite_module, "load_data", patched)
    reads_at_record: list[int] = []

    def log(line: str) -> None:
        if line.startswith("sweep record:"):
            reads_at_record.append(splits["test"].reads)

    # 1. the full sweep: no test point is read until the selection is recorded; the test stage then reads them
    record = run_sweep(s, results_dir=tmp_path, progress=False, log=log)
    assert reads_at_record == [0] and splits["test"].reads > 0 and splits["val"].reads > 0
    (entry,) = record["selections"]
    assert entry["method"] == "hydra+s2ap" and entry["sparsity"] == 0.9
    assert [p["value"] for p in entry["curve"]] == GRID
    means = [p["mean"] for p in entry["curve"]]
    assert entry["selected"] == GRID[means.index(max(means))]
    stage_root = suite_dir(dataclasses.replace(s, name="sw-sweep", sweep={}), tmp_path)
    for value, point in zip(GRID, entry["curve"]):  # the curve is the stage cells' validation PGD accuracy
        (r,) = [r for r in load_results(stage_root)[0] if r["cell"]["label"] == f"hydra+s2ap-gamma{value}"]
        assert r["config"]["evaluation"]["split"] == "val"
        assert point["per_seed"] == {"0": r["evaluation"]["pgd"]["accuracy"]}
    tested = read_result(result_path(final_suites(s, sweep_of(s), {("hydra+s2ap", 0.9): entry["selected"]})[0]
                                     .cells()[1], suite_dir(s, tmp_path)))
    assert tested["config"]["method"]["s2ap"]["gamma"] == entry["selected"]
    assert "split" not in tested["config"]["evaluation"]  # the suite's own test evaluation
    assert json.loads(record_path(s, suite_dir(s, tmp_path), sweep_of(s)).read_text()) == record
    # the dry run lists the test stage at the recorded values, so its computed cells read "done"; a record made
    # from another selection stage (here another grid) is not used
    chosen_cell = final_suites(s, sweep_of(s), {("hydra+s2ap", 0.9): entry["selected"]})[0].cells()[1]
    plan = "\n".join(plan_lines(s, results_dir=tmp_path))
    assert "the swept methods at the values the sweep record selected" in plan
    assert f"{chosen_cell.key}  [{chosen_cell.config_hash()}]  done" in plan and "2 of 2 cells done" in plan
    regrid = dataclasses.replace(s, sweep={"grid": {"s2ap.gamma": [*GRID, 0.2]}, "seeds": [0]})
    stale = "\n".join(plan_lines(regrid, results_dir=tmp_path))
    assert "at their suite values until the selection stage has run" in stale and "1 of 2 cells done" in stale

    # 2. poisoned test points: the selection stage, recomputed, records the same curve and choice
    splits["test_replace"] = Noise(real.test)
    again = run_sweep(s, results_dir=tmp_path, progress=False, force=True, log=lambda line: None, test_stage=False)
    assert splits["test"].reads == 0
    assert again["selections"] == record["selections"]

    # 3. other validation points: the curve (and what is selected from it) follows them
    splits["val_replace"] = Noise(real.val)
    moved = run_sweep(s, results_dir=tmp_path, progress=False, force=True, log=lambda line: None, test_stage=False)
    new = moved["selections"][0]
    assert [p["per_seed"] for p in new["curve"]] != [p["per_seed"] for p in entry["curve"]]
    new_means = [p["mean"] for p in new["curve"]]
    assert new["selected"] == GRID[new_means.index(max(new_means))]


def test_grid_and_sweep_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert parse_grid("s2ap.gamma=[0.01, 0.1]") == {"s2ap.gamma": [0.01, 0.1]}
    with pytest.raises(ConfigError, match="must be a list"):
        parse_grid("s2ap.gamma=0.1")
    base = tiny_suite_dict(methods=["hydra", S2AP_ARM])
    for sweep, message in (({"grid": {"s2ap.gamma": [0.01]}, "seed": [0]}, "sweep.seed"),
                           ({"grid": {"search.lr": [0.1]}}, "sweep an S2AP setting"),
                           ({"grid": {"s2ap.gamma": [-1.0]}}, "gamma must be >= 0"),
                           ({"grid": {"s2ap.gamma": [0.1, 0.1]}}, "distinct"),
                           ({"grid": {"s2ap.gamma": [0.1]}, "methods": ["hydra"]}, "sweep.methods")):
        with pytest.raises(ConfigError, match=message):
            build(SuiteConfig, {**base, "sweep": sweep})
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**base, "results_dir": "r"}))
    assert main(["sweep", str(path), "--dry-run"]) == 2  # no sweep: block and no --set-grid
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--set-grid" in err
    assert main(["sweep", str(path), "--dry-run", "--set-grid", "s2ap.gamma=[0.01,0.1]"]) == 0
    out = capsys.readouterr().out
    assert "selection stage tiny-sweep: 2 cells" in out and "hydra+s2ap-gamma0.1/" in out


def test_run_refuses_a_sweep_suite_and_sweep_sizes_seeds_from_a_pilot(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """`run` on a suite with a sweep: block would compute its swept arms at the placeholder values: one line,
    exit 2, nothing written; `--set 'sweep={}'` runs the values as written; `sweep --dry-run --target-difference`
    sizes seeds from a pilot as `run --dry-run` does."""
    base = tiny_suite_dict(methods=["hydra", S2AP_ARM])
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({**base, "sweep": {"grid": {"s2ap.gamma": [0.01, 0.1]}}}))
    out_dir = ["--results-dir", str(tmp_path / "r")]
    assert main(["run", str(path), "--dry-run", *out_dir]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "s2ap-bench sweep" in err and "sweep={}" in err
    assert main(["run", str(path), *out_dir]) == 2 and not (tmp_path / "r").exists()
    capsys.readouterr()
    assert main(["run", str(path), "--dry-run", "--set", "sweep={}", *out_dir]) == 0
    pilot = Path(__file__).resolve().parents[1] / "results" / "fmnist"
    assert main(["sweep", str(path), "--dry-run", "--target-difference", "1", "--pilot", str(pilot), *out_dir]) == 0
    out = capsys.readouterr().out
    assert "selection stage tiny-sweep" in out and "seeds a true 1-point difference needs" in out
    assert "(S2AP - base), AutoAttack: " in out


def test_a_follower_takes_the_value_selected_for_its_leader() -> None:
    s = build(SuiteConfig, tiny_suite_dict(
        methods=["hydra", S2AP_ARM, {**S2AP_ARM, "label": "hydra+s2ap+awp", "phases": {"finetune": {"awp": True}}}],
        sweep={"grid": {"s2ap.gamma": GRID}, "follow": {"hydra+s2ap+awp": "hydra+s2ap"}}))
    sweep = sweep_of(s)
    assert sweep.methods == ("hydra+s2ap",)  # the follower is not swept
    (part,) = final_suites(s, sweep, {("hydra+s2ap", 0.9): 0.5})
    gammas = {m.label: m.s2ap.gamma for m in part.methods if m.uses_s2ap}
    assert gammas == {"hydra+s2ap": 0.5, "hydra+s2ap+awp": 0.5}
    with pytest.raises(ConfigError, match="sweep.follow"):
        build(SuiteConfig, {**tiny_suite_dict(methods=[S2AP_ARM]),
                            "sweep": {"grid": {"s2ap.gamma": GRID}, "follow": {"hydra+s2ap": "hydra"}}})


def test_a_control_at_one_sparsity_runs_only_there_and_follows_its_arm() -> None:
    """A method entry's ``sparsities`` (a control arm at one sparsity): its cells are only there, its hash is
    that of the same entry without the field, the test stage of another sparsity leaves it out, and a follower
    must run where its leader was swept."""
    control = {**S2AP_ARM, "label": "hydra+s2ap-random", "sparsities": [0.9],
               "s2ap": {**S2AP_ARM.get("s2ap", {}), "direction": "random"}}
    d = tiny_suite_dict(methods=["hydra", S2AP_ARM, control], sparsities=[0.9, 0.95],
                        sweep={"grid": {"s2ap.gamma": GRID}, "follow": {"hydra+s2ap-random": "hydra+s2ap"}})
    s = build(SuiteConfig, d)
    keys = [c.key for c in s.cells() if c.method.label == "hydra+s2ap-random"]
    assert keys and all("-s0.9-" in k for k in keys) and len(s.cells()) == 5 * len(s.seeds)
    everywhere = build(SuiteConfig, {**d, "methods": ["hydra", S2AP_ARM, {k: v for k, v in control.items()
                                                                           if k != "sparsities"}]})
    hashes = {c.key: c.config_hash() for c in everywhere.cells()}
    assert all(hashes[c.key] == c.config_hash() for c in s.cells())  # where it runs, the hash is the same
    parts = final_suites(s, sweep_of(s), {("hydra+s2ap", 0.9): 0.5, ("hydra+s2ap", 0.95): 0.01})
    assert [[m.label for m in p.methods] for p in parts] == [["hydra", "hydra+s2ap", "hydra+s2ap-random"],
                                                             ["hydra", "hydra+s2ap"]]
    assert parts[0].methods[2].s2ap.gamma == 0.5 and parts[0].methods[2].s2ap.direction == "random"
    for methods, sweep, field in (
            (["hydra", {**control, "sparsities": [0.5]}], {}, "methods[1].sparsities"),
            (["hydra", {**control, "sparsities": [0.9, 0.9]}], {}, "sparsities"),
            ([{**S2AP_ARM, "sparsities": [0.9]}, {**control, "sparsities": [0.95]}],
             {"grid": {"s2ap.gamma": GRID}, "follow": {"hydra+s2ap-random": "hydra+s2ap"}}, "sweep.follow")):
        with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace(".", r"\.")) as refused:
            build(SuiteConfig, {**d, "methods": methods, "sweep": sweep})
        assert "\n" not in str(refused.value)
