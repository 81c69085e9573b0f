"""The overhead benchmark runs and reports ratios measured in one interleaved run."""

from __future__ import annotations

from benchmark.bench_s2ap import s2ap_overhead
from benchmark.cli import main

SMALL = ["dataset.options={test_fraction: 0.9}", "search.batch_size=256", "threat.steps=2"]


def test_s2ap_overhead_reports_every_arm() -> None:
    report = s2ap_overhead(repeats=1, overrides=SMALL)
    assert set(report["ratio_to_base"]) == {"hydra", "hydra+s2ap (reuse x_adv)", "hydra+s2ap (regenerate x_adv)"}
    assert report["ratio_to_base"]["hydra"] == 1.0
    assert all(t > 0 for t in report["median_s_per_epoch"].values())


def test_bench_cli(capsys) -> None:
    args = ["bench", "s2ap", "--repeats", "1"]
    for item in SMALL:
        args += ["--set", item]
    assert main(args) == 0
    assert "hydra+s2ap (reuse x_adv)" in capsys.readouterr().out
