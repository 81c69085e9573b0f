"""``selection.md``: what a sweep's selection on the validation split rests on. Per (method, sparsity) the whole
curve (mean and 95 % t-interval over the sweep seeds per value), the selected value, and its lead over the
runner-up paired over the seeds (the two values' cells share each seed's dense model), so a reader sees where the
validation split separates the values and where the selection is the highest mean by a margin within noise."""

from __future__ import annotations

from pathlib import Path

from benchmark.report.significance import EQUAL_SEEDS, paired_t
from benchmark.report.stats import fmt_sparsity
from benchmark.store import gate
from benchmark.store.paths import SWEEP_FOLDER
from benchmark.store.results import read_sweep_record

SELECTION_FILE = "selection.md"


def sweep_records(root: Path) -> list[tuple[Path, dict]]:
    """The sweep records under ``<root>/sweep/`` that read (through the gate), with their paths, in file order
    (one that does not read is skipped: the sweep command rewrites it)."""
    out: list[tuple[Path, dict]] = []
    for path in gate.list_files(root, Path(root) / SWEEP_FOLDER, suffixes=(".json",)):
        record = read_sweep_record(root, path)
        if record is not None:
            out.append((path, record))
    return out


def lead_over_runner_up(entry: dict) -> tuple[object, list[float]] | None:
    """The runner-up value (second-highest mean, first in grid order among equals) and, per seed both values
    have, the selected value's accuracy minus the runner-up's in percentage points; None for a one-value curve."""
    curve = entry["curve"]
    chosen = next(p for p in curve if p["value"] == entry["selected"])
    others = [p for p in curve if p is not chosen]
    if not others:
        return None
    runner = max(others, key=lambda p: p["mean"])  # max keeps the first of equals: grid order
    seeds = sorted(set(chosen["per_seed"]) & set(runner["per_seed"]), key=int)
    return runner["value"], [100 * (chosen["per_seed"][s] - runner["per_seed"][s]) for s in seeds]


def _point(p: dict) -> str:
    low_high = p.get("interval95")
    inside = "" if not low_high else f" [{100 * low_high[0]:.1f}, {100 * low_high[1]:.1f}]"
    return f"{100 * p['mean']:.1f}{inside}"


def record_markdown(record: dict) -> str:
    """One sweep record's section: what was swept and scored, the table, and how many selections the
    validation split separates from their runner-up."""
    from tabulate import tabulate

    grid = record["grid"]
    field = record["field"]
    rows, separated, tested = [], 0, 0
    for e in record["selections"]:
        by_value = {str(p["value"]): p for p in e["curve"]}
        lead = lead_over_runner_up(e)
        lead_text = interval = p_text = "-"
        runner = "-"
        if lead is not None:
            runner = str(lead[0])
            if len(lead[1]) >= 2:
                t = paired_t(lead[1])
                tested += 1
                separated += t.low is not None and t.low > 0
                interval = EQUAL_SEEDS if t.low is None or t.high is None else f"[{t.low:+.1f}, {t.high:+.1f}]"
                lead_text, p_text = f"{t.mean:+.1f}", f"{t.p:.2g}"
        means = [p["mean"] for p in e["curve"]]
        rows.append([e["method"], fmt_sparsity(e["sparsity"])]
                    + [_point(by_value[str(v)]) if str(v) in by_value else "-" for v in grid]
                    + [str(e["selected"]), runner, lead_text, interval, p_text,
                       f"{100 * (max(means) - min(means)):.1f}"])
    headers = (["method", "sparsity"] + [f"{field}={v}" for v in grid]
               + ["selected", "runner-up", "lead (points)", "95 % interval (t)", "t-test p", "curve range"])
    table = tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
    seeds = ", ".join(str(s) for s in record["seeds"])
    return (f"## {record['suite']}: {field} over {grid}\n\n"
            f"Score: {record['score']}; seeds {seeds}. Each value: mean validation robust accuracy (%) and its "
            f"95 % t-interval over the seeds. Lead: the selected value minus the runner-up (the next-highest "
            f"mean), paired over the seeds; curve range: highest minus lowest mean.\n\n{table}\n\n"
            f"The validation split separates the selected value from its runner-up (paired interval above 0) in "
            f"{separated} of {tested} selections; elsewhere the selection is the highest mean by a margin within "
            f"the seeds' noise.\n")


def selection_markdown(records: list[dict]) -> str:
    """``selection.md`` for the sweep records of a suite folder; empty without any."""
    if not records:
        return ""
    return "\n".join(["# Selection on the validation split\n",
                      "Written by `s2ap-bench report` from the sweep records of `s2ap-bench sweep` (`sweep/*.json`); "
                      "the test points never enter them.\n"] + [record_markdown(r) for r in records])
