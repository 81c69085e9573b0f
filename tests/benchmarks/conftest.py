"""One thread for every benchmark, and the harness / bare ratio of each hot path: printed after the run and
stored in the JSON that ``--benchmark-json`` writes (the baseline holds them too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


def ratios(benchmarks: list[dict]) -> dict[str, dict]:
    """Per group: the min time of each arm (seconds) and harness / bare."""
    arms: dict[str, dict[str, float]] = {}
    for b in benchmarks:
        arms.setdefault(b["group"], {})[b["extra_info"]["arm"]] = b["stats"]["min"]
    return {group: {**t, "ratio": t["harness"] / t["bare"]} for group, t in arms.items() if len(t) == 2}


def pytest_benchmark_update_json(config, benchmarks, output_json: dict) -> None:
    output_json["ratios"] = ratios(output_json["benchmarks"])


def _baseline_ratios(config) -> dict[str, dict]:
    compare = config.getoption("benchmark_compare", None)
    path = Path(compare) if isinstance(compare, str) else None
    if path is None or not path.is_file():
        return {}
    return json.loads(path.read_text()).get("ratios", {})


def pytest_terminal_summary(terminalreporter, config) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    current = ratios([b.as_dict(include_data=False) for b in session.benchmarks])
    baseline = _baseline_ratios(config)
    terminalreporter.section("harness / bare (min time of each arm)")
    for group, r in current.items():
        base = f"   baseline {baseline[group]['ratio']:.3f}x" if group in baseline else ""
        terminalreporter.write_line(f"{group:<58} {1e3 * r['harness']:9.2f} ms / {1e3 * r['bare']:9.2f} ms = "
                                    f"{r['ratio']:.3f}x{base}")
