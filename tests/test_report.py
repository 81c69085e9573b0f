"""Leaderboard outputs from synthetic result dicts: numbers checked by hand, the formats parsed back, plots,
the HTML page (one file, nothing external, and in a real headless Chromium), deterministic regeneration."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.report import write_report, write_tables
from benchmark.report.generate import TABLE_FILES
from benchmark.report.reference import REFERENCES, comparison_table
from benchmark.report.tables import accuracy_table, details_table, effect_table, latex_table, markdown_table
from benchmark.store.results import load_results, write_result
from tests.conftest import with_files


def make_result(method: str = "hydra", sparsity: float = 0.9, seed: int = 0, clean: float = 0.9,
                aa: float | None = 0.5, *, dataset: str = "digits", model: str = "digits_cnn",
                structure: str = "unstructured", eps: str = "32/255", mask_change: float | None = 0.1,
                sharpness: float = 2.0, aa_flags: tuple[str, ...] = (), warmup: int = 1) -> dict:
    """A result dict that follows the schema of benchmark/results.py, with the figures the tests set."""
    pruner, _, plugin = method.partition("+")
    dense = method == "dense"
    per_layer = {"conv1": {"n_weights": 100, "n_zero": round(100 * sparsity), "sparsity": round(100 * sparsity) / 100},
                 "fc": {"n_weights": 50, "n_zero": round(50 * sparsity), "sparsity": round(50 * sparsity) / 50}}
    evaluation = {
        "n_examples": 50, "eps": eps, "eps_float": 0.1, "norm": "Linf", "seed": 0, "clean_accuracy": clean,
        "pgd": {"accuracy": (aa if aa is not None else clean - 0.1), "steps": 20, "step_size": "8/255"},
        "autoattack": None if aa is None else {
            "robust_accuracy": aa, "version": "standard", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"],
            "package": "pyautoattack", "package_version": "0.2.0", "seed": 0, "flags": list(aa_flags)},
        "flags": list(aa_flags),
    }
    mask = None if dense or mask_change is None else {
        "robust_accuracy_after_search": 0.3,
        "stability": {"per_epoch_normalized": [0.02, 0.01, 0.005],
                      "per_epoch_sparsity_aware": [0.4, 0.2, mask_change],
                      "final_epochs_mean_sparsity_aware": mask_change, "final_epochs_window": 2},
        "sharpness": {"top_eigenvalue": sharpness, "iterations": 5, "converged": True},
    }
    phases = {p: {"wall_s": 10.0 + seed, "peak_memory_mb": 400.0 + seed, "peak_memory_kind": "process_max_rss"}
              for p in ("pretrain", "search", "finetune", "evaluate")}
    return {
        "schema_version": 1, "suite": "synthetic",
        "cell": {"method": method, "label": method, "pruner": None if dense else pruner,
                 "plugin": plugin or None, "dataset": dataset, "model": model, "structure": structure,
                 "sparsity": 0.0 if dense else sparsity, "seed": seed},
        "config": {}, "config_hash": "0123456789abcdef",
        "pruner_options": {"name": method, **({"s2ap": {"gamma": 0.05, "warmup_epochs": warmup}} if plugin else {})},
        "sparsity": {"target": sparsity, "achieved": 0.0 if dense else sparsity, "n_weights": 150,
                     "n_zero": 0 if dense else round(150 * sparsity), "per_layer": {} if dense else per_layer},
        "evaluation": evaluation, "mask": mask, "phases": phases, "history": {"search": [], "finetune": []},
        "environment": {}, "created": "2026-01-01T00:00:00+00:00",
    }


# hand-computed: clean 90/94/98 -> 94.00 ± 4.00; AA 60/66/69 -> 65.00 ± 4.58 (sample std, sqrt(21))
#                +S2AP clean 92/96/97 -> 95.00 ± 2.65 (sqrt 7); AA 62/70/72 -> 68.00 ± 5.29 (sqrt 28)
#                paired differences: clean +2/+2/-1 -> +1.00 ± 1.73; AA +2/+4/+3 -> +3.00 ± 1.00
#                mask change 0.10/0.12/0.14 vs 0.08/0.09/0.13 -> -0.0200 ± 0.0100
#                sharpness 10/20/30 vs 4/8/12 -> -12.00 ± 6.00
BASE_90 = [(0.90, 0.60, 0.10, 10.0), (0.94, 0.66, 0.12, 20.0), (0.98, 0.69, 0.14, 30.0)]
S2AP_90 = [(0.92, 0.62, 0.08, 4.0), (0.96, 0.70, 0.09, 8.0), (0.97, 0.72, 0.13, 12.0)]
SQUARE_FLAG = "Square Attack has decreased the robust accuracy of 2.00%."


def suite_results() -> list[dict]:
    """digits: hydra and hydra+s2ap at 90% (3 seeds) and 99% (2 seeds for the base, 1 flagged; robust > clean
    once), and a dense reference; cifar10/resnet18 at eps 8/255 for the reference comparison."""
    rs = []
    for s, (clean, aa, change, sharp) in enumerate(BASE_90):
        rs.append(make_result("hydra", 0.9, s, clean, aa, mask_change=change, sharpness=sharp))
    for s, (clean, aa, change, sharp) in enumerate(S2AP_90):
        rs.append(make_result("hydra+s2ap", 0.9, s, clean, aa, mask_change=change, sharpness=sharp))
    rs.append(make_result("hydra", 0.99, 0, 0.30, 0.20, aa_flags=(SQUARE_FLAG,)))
    rs.append(make_result("hydra", 0.99, 1, 0.30, 0.40))  # robust above clean
    for s in range(3):
        rs.append(make_result("hydra+s2ap", 0.99, s, 0.20, 0.10))
    rs.append(make_result("dense", 0.0, 0, 0.99, 0.80))
    for s in range(2):
        rs.append(make_result("hydra", 0.9, s, 0.78, 0.4534, dataset="cifar10", model="resnet18", eps="8/255"))
        rs.append(make_result("hydra+s2ap", 0.9, s, 0.79, 0.46, dataset="cifar10", model="resnet18", eps="8/255"))
    return rs


def write_suite(root: Path, results: list[dict] | None = None) -> Path:
    for r in results if results is not None else suite_results():
        c = r["cell"]
        name = f"{c['structure']}-s{c['sparsity']}-seed{c['seed']}.json"
        path = root / c["dataset"] / c["model"] / c["label"] / name
        write_result(path, with_files(path, r))
    return root


DIGITS = ("digits", "digits_cnn", "unstructured")


def digits() -> list[dict]:
    return [r for r in suite_results() if r["cell"]["dataset"] == "digits"]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One results folder with the full report generated, and the sha256 of every generated file."""
    root = write_suite(tmp_path_factory.mktemp("site") / "results")
    written, problems = write_report(root)
    assert not problems
    return root, {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in written}


def md_rows(markdown: str) -> dict[str, list[str]]:
    """The rows of the Markdown tables in ``markdown``, by their first cell."""
    return {cells[0]: cells[1:] for line in markdown.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}


def row(table, label: str) -> list[str]:
    (found,) = [r for r in table.rows if r.cells[0][0].text == label]
    return ["".join(p.text for p in c) for c in found.cells]


def test_a_dense_figure_on_fewer_seeds_than_the_row_shows_its_n() -> None:
    """A dense reference recomputed with a newer evaluation carries a figure its siblings lack: the dense row
    says over how many seeds its mean is, as a method row does."""
    dense = [make_result("dense", seed=s, clean=0.99, aa=0.8) for s in range(3)]
    hydra = [make_result("hydra", seed=s) for s in range(3)]
    for r in [dense[0], *hydra]:
        r["evaluation"]["min_norm"] = {"median": 0.16}
    table = accuracy_table(DIGITS, dense + hydra)
    assert table.headers[2] == "90% median distance"
    assert row(table, "dense (unpruned)")[1:4] == ["99.00 ± 0.00 / 80.00 ± 0.00", "0.1600 (n=1)", "3"]
    assert row(table, "hydra")[2] == "0.1600 ± 0.0000"


def test_no_security_curves_when_only_the_dense_references_hold_distances() -> None:
    """fmnist-search-only: its dense references carry minimum-norm distances, its cells none; there is no
    method curve to draw (the report used to fail on an empty panel grid)."""
    from benchmark.report.plots import security_curves

    dense = make_result("dense", clean=0.99, aa=0.8)
    dense["evaluation"]["min_norm"] = {"norm": "Linf", "median": 0.16}
    assert security_curves(DIGITS, [dense, make_result("hydra")]) is None


def test_accuracy_cells_are_mean_and_sample_std_over_seeds() -> None:
    table = accuracy_table(DIGITS, digits())
    assert table.headers == ["method", "90% clean / AA", "99% clean / AA", "seeds", "AA flags", "robust > clean",
                             "degenerate"]
    assert row(table, "hydra")[1] == "94.00 ± 4.00 / 65.00 ± 4.58"
    assert row(table, "hydra+s2ap")[1] == "95.00 ± 2.65 / 68.00 ± 5.29"
    # the base has 2 seeds at 99% against 3 at 90%: the cell says so
    assert row(table, "hydra")[2] == "30.00 ± 0.00 (n=2) / 30.00 ± 14.14 (n=2)"
    assert row(table, "hydra")[3:] == ["3", "1", "1", "0"]  # seeds, AA-flagged, robust > clean, degenerate
    assert row(table, "dense (unpruned)")[1] == "99.00 / 80.00"
    labels = [r.cells[0][0].text for r in table.rows]
    assert labels == ["dense (unpruned)", "hydra", "hydra+s2ap", "Δ hydra+s2ap - hydra"]


def test_difference_rows_are_paired_by_seed() -> None:
    table = accuracy_table(DIGITS, digits())
    diff = row(table, "Δ hydra+s2ap - hydra")
    assert diff[1] == "+1.00 ± 1.73 / +3.00 ± 1.00"
    assert diff[2] == "-10.00 ± 0.00 / -20.00 ± 14.14"  # only seeds 0 and 1 have both arms
    assert diff[3] == "3"
    effect = effect_table(DIGITS, digits())
    lines = {(r[2], r[3]): r[4:] for r in (["".join(p.text for p in c) for c in x.cells] for x in effect.rows)}
    assert lines[("90%", "AutoAttack (%) ↑")] == ["65.00 ± 4.58", "68.00 ± 5.29", "+3.00 ± 1.00", "3"]
    assert lines[("90%", "clean (%) ↑")] == ["94.00 ± 4.00", "95.00 ± 2.65", "+1.00 ± 1.73", "3"]
    assert lines[("90%", "mask change ↓")] == ["0.1200 ± 0.0200", "0.1000 ± 0.0265", "-0.0200 ± 0.0100", "3"]
    assert lines[("90%", "sharpness ↓")] == ["20.00 ± 10.00", "8.00 ± 4.00", "-12.00 ± 6.00", "3"]


def test_best_value_per_column_is_bold() -> None:
    table = accuracy_table(DIGITS, digits())
    md = md_rows(markdown_table(table))
    # 90%: +S2AP is better in clean and AA; 99%: the base is better in both; the dense row is never marked
    assert md["hydra+s2ap"][:2] == ["**95.00 ± 2.65** / **68.00 ± 5.29**", "20.00 ± 0.00 / 10.00 ± 0.00"]
    assert md["hydra"][:2] == ["94.00 ± 4.00 / 65.00 ± 4.58", "**30.00 ± 0.00 (n=2)** / **30.00 ± 14.14 (n=2)**"]
    assert md["dense (unpruned)"][0] == "99.00 / 80.00"
    details = markdown_table(details_table(DIGITS, digits()))
    assert "**0.1000 ± 0.0265**" in details and "**8.00 ± 4.00**" in details  # lower is better for both
    assert "**0.1200" not in details


def test_latex_is_booktabs_with_bold_best_and_escaped_text() -> None:
    tex = latex_table(accuracy_table(DIGITS, digits()), "acc")
    lines = tex.splitlines()
    assert lines[0] == "\\begin{table}[htbp]" and lines[-1] == "\\end{table}"
    start, end = lines.index("\\toprule"), lines.index("\\bottomrule")
    assert lines[start - 1].startswith("\\begin{tabular}{lrrrrrr}") and lines[start + 2] == "\\midrule"
    body = [lines[start + 1]] + lines[start + 3:end]
    assert len(body) == 5  # header, dense, hydra, hydra+s2ap, difference
    for line in body:
        assert line.rstrip().endswith("\\\\")
        assert len(re.findall(r"(?<!\\)&", line)) == 6
    assert "90\\% clean / AA" in body[0]
    assert "\\textbf{95.00 $\\pm$ 2.65} / \\textbf{68.00 $\\pm$ 5.29}" in tex
    assert "$\\Delta$ hydra+s2ap - hydra" in tex
    assert tex.count("{") == tex.count("}")
    assert "\\resizebox{\\linewidth}{!}{%\n" in tex  # wider than a line: scaled down
    assert not re.search(r"(?<!\\)[%#_]", tex.replace("\\label{tab:acc}", "").replace("{!}{%\n", ""))


def test_csv_parses_back_to_the_numbers(tmp_path: Path) -> None:
    write_suite(tmp_path)
    written, problems = write_tables(tmp_path)
    assert [p.name for p in written] == list(TABLE_FILES) and not problems
    rows = list(csv.DictReader(io.StringIO((tmp_path / "leaderboard.csv").read_text())))

    def pick(**kw: str) -> dict:
        (found,) = [r for r in rows if all(r[k] == v for k, v in kw.items())]
        return found

    base = pick(dataset="digits", row="method", method="hydra", sparsity="0.9", metric="aa")
    assert float(base["mean"]) == pytest.approx(65.0) and float(base["std"]) == pytest.approx(21 ** 0.5)
    assert base["n"] == "3" and base["best"] == "0" and base["unit"] == "%"
    assert pick(dataset="digits", row="method", method="hydra+s2ap", sparsity="0.9", metric="aa")["best"] == "1"
    diff = pick(dataset="digits", row="s2ap_minus_base", method="hydra+s2ap", sparsity="0.9", metric="sharpness")
    assert diff["base"] == "hydra" and float(diff["mean"]) == pytest.approx(-12.0)
    assert float(pick(dataset="digits", row="dense", metric="clean")["mean"]) == pytest.approx(99.0)
    ref = list(csv.DictReader(io.StringIO((tmp_path / "reference.csv").read_text())))
    assert {r["comparable"].split(":")[0] for r in ref} == {"not comparable"}


def test_reference_comparison_only_where_the_setting_matches() -> None:
    assert len(REFERENCES) == 13
    table = comparison_table(suite_results())
    rows = {(r[0], r[3], r[4]): r for r in (["".join(p.text for p in c) for c in x.cells] for x in table.rows)}
    hydra = rows[("cifar10", "hydra", "90%")]
    assert hydra[7:10] == ["76.74", "43.34", "+2.00"]  # ours 45.34 (2 seeds at 45.34) vs published 43.34
    # every difference from the published setting is listed: eps, test points, recipe, checkpoint selection
    assert hydra[10].startswith("not comparable: evaluation eps 8/255")
    for difference in ("first 50 test points (published: all 10000)", "checkpoint: last epoch (published: best"):
        assert difference in hydra[10]
    assert rows[("cifar10", "hydra+s2ap", "90%")][10].startswith("not comparable: no published numbers for +s2ap;")
    for key, r in rows.items():
        if key[0] == "digits":
            assert r[7:10] == ["-", "-", "-"] and "digits suite has no published counterpart" in r[10]
    other = comparison_table([make_result("hydra", 0.5, dataset="cifar10", model="resnet18", eps="8/255",
                                          structure="channel")])
    status = "".join(p.text for p in other.rows[0].cells[-1])
    assert "channel pruning" in status and "sparsity 50%" in status


def published_setting(method: str) -> dict:
    """A cifar10/resnet18 result that matches the published setting and ``method``'s public recipe."""
    from benchmark.report.reference import PHASES, RECIPES

    recipe = RECIPES[method]
    r = make_result(method, 0.9, 0, 0.77, 0.44, dataset="cifar10", model="resnet18", eps="0.031")
    r["evaluation"].update(n_examples=10000, eps_float=0.031)
    r["training"] = {"checkpoint": recipe["checkpoint"]}
    r["config"] = {"threat": {"eps": "0.031", "step_size": "0.0078", "steps": 10}}
    for i, phase in enumerate(recipe.get("phases", PHASES)):
        r["config"][phase] = {"objective": recipe["objective"], "trades_beta": 6.0,
                              "weight_decay": recipe["weight_decay"], "lr": recipe["lr"][i],
                              "epochs": recipe["epochs"][i], "batch_size": recipe["batch_size"],
                              "schedule": recipe["schedule"], "momentum": recipe["momentum"]}
    return r


def test_rst_is_compared_on_its_own_recipe() -> None:
    """RST's published number (ResNet18, 90 %) is compared on its search's recipe, which runs with the suite's
    pretrain settings; no dense-model difference is listed for a method that has no dense model."""
    def status(r: dict) -> str:
        return "".join(p.text for p in comparison_table([r]).rows[0].cells[-1])

    assert status(published_setting("rst")) == "comparable"
    short = published_setting("rst")
    short["config"]["pretrain"]["epochs"] = 20
    assert status(short) == "not comparable: pretrain epochs 20 (published: 160)"


@pytest.mark.parametrize("method", ["hydra", "harp"])
def test_comparable_only_where_no_difference_is_left(method: str) -> None:
    def status(r: dict) -> str:
        return "".join(p.text for p in comparison_table([r]).rows[0].cells[-1])

    assert status(published_setting(method)) == "comparable"
    other = "harp" if method == "hydra" else "hydra"
    from benchmark.report.reference import RECIPES

    mixed = published_setting(method)
    mixed["config"]["finetune"]["weight_decay"] = RECIPES[other]["weight_decay"]
    assert status(mixed) == (f"not comparable: finetune weight_decay {RECIPES[other]['weight_decay']} "
                             f"(published: {RECIPES[method]['weight_decay']})")


def test_flags_are_counted_and_listed(tmp_path: Path) -> None:
    write_suite(tmp_path)
    write_tables(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert f"`digits/digits_cnn/hydra/unstructured-s0.99-seed0.json`: AutoAttack: {SQUARE_FLAG}" in md
    assert ("`digits/digits_cnn/hydra/unstructured-s0.99-seed1.json`: robust accuracy 40.00% above clean accuracy "
            "30.00%") in md
    assert "90% clean / AA" in md and "## cifar10 / resnet18 / unstructured" in md


def test_report_writes_plots_and_one_self_contained_page(site: tuple[Path, dict[str, str]]) -> None:
    root, written = site
    assert set(TABLE_FILES) | {"index.html"} <= set(written)
    plots = sorted(p.name for p in (root / "plots").iterdir())
    assert plots == sorted(Path(name).name for name in written if name.startswith("plots"))
    kinds = ("robust-vs-sparsity", "clean-vs-robust", "mask-stability", "per-layer-sparsity")
    for group in ("digits-digits-cnn-unstructured", "cifar10-resnet18-unstructured"):
        for kind in kinds:
            assert f"{group}-{kind}.png" in plots and f"{group}-{kind}.svg" in plots
    for name in plots:
        path = root / "plots" / name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
        else:
            assert ET.fromstring(path.read_bytes()).tag.endswith("svg")
    html = (root / "index.html").read_text()
    assert [p for p in root.iterdir() if p.suffix == ".html"] == [root / "index.html"]
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<link\b|@import|url\(\s*['\"]?(https?:)?//|<script[^>]*\bsrc=|<iframe", html, re.I)
    assert html.count("<svg") == 8 and "<script>" in html and "<style>" in html
    assert "AutoAttack standard (apgd-ce, apgd-t, fab-t, square" in html and "eps = 32/255" in html
    assert "first 50 test points" in html and "seeds 0, 1, 2" in html
    for r in load_results(root)[0]:  # every result file is linked, by a path that exists from the page
        assert f'href="{r["_path"].replace("+", "%2B")}"' in html
        assert (root / r["_path"]).is_file()


def test_regeneration_is_byte_identical(site: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    root, first = site
    copy = tmp_path / "copy"  # the same result files in another folder, generated again from scratch
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*.html", "*.md", "*.tex", "*.csv", "plots"))
    assert all(p.suffix in (".json", ".safetensors") for p in copy.rglob("*") if p.is_file())
    written, _ = write_report(copy)
    assert {str(p.relative_to(copy)): hashlib.sha256(p.read_bytes()).hexdigest() for p in written} == first


def test_corrupt_file_is_skipped_and_reported(tmp_path: Path, capsys) -> None:
    write_suite(tmp_path, digits())
    victim = tmp_path / "digits" / "digits_cnn" / "hydra" / "unstructured-s0.9-seed2.json"
    victim.write_text(victim.read_text()[:200])
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("skipped: ") and victim.name in err[0]
    md = md_rows((tmp_path / "leaderboard.md").read_text())
    assert md["hydra"][0] == "92.00 ± 2.83 / 63.00 ± 4.24"  # seeds 0 and 1 only
    assert "skipped as corrupt" in (tmp_path / "index.html").read_text()
    assert main(["table", str(tmp_path)]) == 0 and victim.name in capsys.readouterr().err


def test_empty_folder_gives_empty_outputs(tmp_path: Path) -> None:
    written, problems = write_report(tmp_path)
    assert not problems and "No results." in (tmp_path / "leaderboard.md").read_text()
    assert "No results." in (tmp_path / "index.html").read_text()
    assert not list((tmp_path / "plots").iterdir())


# --- the page in a real browser -----------------------------------------------------------------------------

def chromium_binary() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page, over the browser's local websocket."""

    def __init__(self, ws_url: str) -> None:
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.events: list[dict] = []
        self.next_id = 0

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg["result"]
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))

    def js(self, expression: str):
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element."""
        box = self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                      "e.scrollIntoView({block: 'center', inline: 'center'}); const r = e.getBoundingClientRect(); "
                      "const x = r.x + r.width / 2, y = r.y + r.height / 2; "
                      "return [x, y, e.contains(document.elementFromPoint(x, y))]; })()")
        assert box[2], f"{selector} is covered by another element"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def errors(self) -> list[dict]:
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown" or (
                    e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert")) or (
                    e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error"):
                out.append(e)
        return out


@pytest.fixture
def browser_page(tmp_path: Path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary found (apt-get install chromium, or set CHROMIUM=/path/to/binary)")
    profile = tmp_path / "profile"
    log = (tmp_path / "chromium.log").open("w")
    proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                             "--no-first-run", "--disable-background-networking", "--disable-component-update",
                             "--disable-sync", "--disable-extensions", "--remote-allow-origins=*",
                             f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,900",
                             "about:blank"], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    client = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            assert proc.poll() is None, (tmp_path / "chromium.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "chromium did not open its debugging port"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        (page,) = [t for t in targets if t["type"] == "page"]
        client = DevTools(page["webSocketDebuggerUrl"])
        yield client
    finally:
        if client is not None:
            client.ws.close()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow
def test_page_sorts_and_filters_in_a_real_browser(site: tuple[Path, dict[str, str]], browser_page: DevTools) -> None:
    page = browser_page
    for domain in ("Runtime", "Log", "Page"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", url=(site[0] / "index.html").as_uri())
    page.wait_for("Page.loadEventFired")
    assert page.js("document.title").startswith("Adversarial pruning leaderboard")

    rows = "Array.from(document.querySelectorAll('#leaderboard table.leaderboard tbody tr'))"
    visible = f"{rows}.filter(r => getComputedStyle(r).display !== 'none')"
    col = page.js("Array.from(document.querySelectorAll('#leaderboard table.leaderboard')[0].tHead.rows[0].cells)"
                  ".findIndex(th => th.textContent.startsWith('AutoAttack'))")
    assert col > 0
    assert page.js("Array.from(document.querySelectorAll('#leaderboard table.leaderboard thead th'))"
                   ".filter(th => th.textContent.includes('dataset')).length") == 0  # no repeated group column

    def table() -> list[list[str]]:  # [setting (the table's heading), method, sparsity, AutoAttack]
        return page.js(f"{visible}.map(r => [r.closest('.board').querySelector('h3').textContent, "
                       f"r.cells[0].textContent, r.cells[1].textContent, r.cells[{col}].textContent])")

    before = table()
    assert before[0][:3] == ["cifar10 / resnet18 / unstructured", "hydra", "90%"] and len(before) == 7
    digits = "document.getElementById('leaderboard-digits-digits_cnn-unstructured')"
    header = f"#leaderboard-digits-digits_cnn-unstructured thead th:nth-child({col + 1}) button"
    page.click(header)
    after = table()
    assert after != before and sorted(after) == sorted(before)
    assert after[:2] == before[:2]  # the other setting's table is not reordered
    values = [float(r[3].split()[0]) for r in after if r[0].startswith("digits")]
    assert values == sorted(values, reverse=True) and after[2][1] == "dense (unpruned)"  # first click: descending
    assert page.js(f"{digits}.querySelector('thead th:nth-child({col + 1})').getAttribute('aria-sort')") == \
        "descending"
    page.click(header)
    values = [float(r[3].split()[0]) for r in table() if r[0].startswith("digits")]
    assert values == sorted(values)

    def choose(name: str, value: str) -> None:
        page.js(f"(() => {{ const s = document.getElementById('filter-{name}'); s.value = {json.dumps(value)}; "
                "s.dispatchEvent(new Event('change')); })()")

    choose("dataset", "digits")
    assert {r[0] for r in table()} == {"digits / digits_cnn / unstructured"} and len(table()) == 5
    assert page.js("getComputedStyle(document.querySelector('.plots[data-dataset=\"cifar10\"]')).display") == "none"
    assert page.js("getComputedStyle(document.getElementById('leaderboard-cifar10-resnet18-unstructured')"
                   ".closest('.board')).display") == "none"  # a setting's table goes with its rows
    choose("sparsity", "0.99")
    assert sorted(r[1:3] for r in table()) == [["hydra", "99%"], ["hydra+s2ap", "99%"]]
    assert page.js("document.getElementById('shown').textContent") == "showing 2 of 7 leaderboard rows"
    files = page.js("Array.from(document.querySelectorAll('#files-table tbody tr'))"
                    ".filter(r => getComputedStyle(r).display !== 'none').length")
    assert files == 5  # 2 + 3 seeds at 99% on digits
    choose("dataset", "")
    choose("sparsity", "")
    assert len(table()) == 7
    assert page.errors() == []


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 1920])
def test_leaderboard_fits_the_window_and_the_plots_follow_it(site: tuple[Path, dict[str, str]], browser_page: DevTools,
                                                             width: int, tmp_path: Path) -> None:
    page = browser_page
    page.call("Page.enable")
    page.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1, mobile=False)
    page.call("Page.navigate", url=(site[0] / "index.html").as_uri())
    page.wait_for("Page.loadEventFired")
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    (tmp_path / f"leaderboard-{width}px.png").write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    g = page.js("""(() => {
        const tables = document.querySelectorAll('#leaderboard table.leaderboard');
        const table = tables[tables.length - 1], box = table.parentElement;
        const top = id => document.getElementById(id).getBoundingClientRect().top + window.scrollY;
        return {inner: window.innerWidth, view: document.documentElement.clientWidth,
                scroll: box.scrollWidth, client: box.clientWidth,
                rights: Array.from(document.querySelectorAll('#leaderboard th, #leaderboard td'))
                    .map(c => c.getBoundingClientRect().right),
                bottom: table.getBoundingClientRect().bottom + window.scrollY, plots: top('plots'), s2ap: top('s2ap'),
                s2apOpen: document.getElementById('s2ap').open, pageScroll: document.documentElement.scrollWidth};
    })()""")
    assert g["inner"] == width
    assert g["scroll"] <= g["client"], g  # the table does not overflow its box: no hidden columns to scroll to
    assert max(g["rights"]) <= g["view"] and g["pageScroll"] <= g["view"], g  # every column inside the window
    assert 0 < g["plots"] - g["bottom"] < 200 and g["plots"] < g["s2ap"] and not g["s2apOpen"], g


def test_flags_point_to_an_explanation_that_exists(tmp_path: Path) -> None:
    zero = ("there are 1 points with zero gradient! This might lead to unreliable evaluation with gradient-based "
            "attacks. See flags_doc.md for details.")
    write_suite(tmp_path, [make_result("hydra", 0.9, 0, aa_flags=(zero,))])
    write_report(tmp_path)
    html, md = (tmp_path / "index.html").read_text(), (tmp_path / "leaderboard.md").read_text()
    assert "flags_doc.md" not in html and "flags_doc.md" not in md
    assert 'See <a href="#flags-help">What the flags mean</a>.' in html and 'id="flags-help"' in html
    assert "See 'What the flags mean'." in md and "### What the flags mean" in md


def test_per_layer_plot_names_each_layer_with_its_size(site: tuple[Path, dict[str, str]]) -> None:
    svg = (site[0] / "plots" / "digits-digits-cnn-unstructured-per-layer-sparsity.svg").read_text()
    assert "conv1 (100)" in svg and "fc (50)" in svg


def test_results_without_autoattack_or_masks_still_report(tmp_path: Path) -> None:
    """A suite run with AutoAttack off, a pruner without scores (no mask figures) and a +S2AP arm without its
    base: the tables say "-" where a figure is missing and the plots fall back to PGD accuracy."""
    rs = [make_result("random", 0.9, s, 0.5 + s / 10, None, mask_change=None) for s in range(2)]
    rs += [make_result("harp+s2ap", 0.9, 0, 0.7, None)]
    write_suite(tmp_path, rs)
    written, problems = write_report(tmp_path)
    assert not problems
    md = md_rows((tmp_path / "leaderboard.md").read_text())
    assert md["random"][0] == "55.00 ± 7.07 / -" and md["harp+s2ap"][0] == "**70.00** / -"
    assert "### S2AP minus base" not in (tmp_path / "leaderboard.md").read_text()
    details = md_rows((tmp_path / "details.md").read_text())
    assert details["random"][-2:] == ["-", "-"]  # sharpness, mask robust accuracy
    svg = (tmp_path / "plots" / "digits-digits-cnn-unstructured-robust-vs-sparsity.svg").read_text()
    assert "PGD accuracy vs sparsity" in svg
    assert "AutoAttack not run (PGD-20 only)" in (tmp_path / "index.html").read_text()


def test_repeated_warnings_collapse_to_one_line_with_their_range() -> None:
    from benchmark.report.stats import collapse_repeats

    said = ["AutoAttack: there are 5 points with zero gradient!", "AutoAttack: there are 8 points with zero gradient!",
            "AutoAttack: there are 5 points with zero gradient!", "robust accuracy 60.00% above clean accuracy 50.00%"]
    assert collapse_repeats(said) == ["AutoAttack: there are 5-8 points with zero gradient! (said 3 times)",
                                      "robust accuracy 60.00% above clean accuracy 50.00%"]
    assert collapse_repeats(["same 3", "same 3"]) == ["same 3 (said 2 times)"]


def test_a_table_names_the_numerical_environments_it_mixes() -> None:
    from benchmark.report.numerics import numerics_kind, numerics_note

    def result(cpu: str | None) -> dict:
        numerics = {"cpu_model": cpu, "cpu_capability": "AVX512", "blas": "mkl 2024.2"} if cpu else None
        return {"environment": {"device": "cpu", "numerics": numerics}}

    amd, intel, old = result("AMD EPYC"), result("Intel Xeon"), result(None)
    assert numerics_kind(amd) == "AMD EPYC, AVX512, mkl 2024.2" and numerics_kind(old) == "not recorded"
    assert numerics_note([amd, amd]) == ""  # one environment: nothing to say
    note = numerics_note([amd, intel, amd, old])
    assert "AMD EPYC, AVX512, mkl 2024.2: 2; Intel Xeon, AVX512, mkl 2024.2: 1; not recorded" in note
    assert note.endswith("include it.") and "(written before results recorded it): 1" in note
    gpu = {"environment": {**amd["environment"], "device": "cuda:0", "device_name": "NVIDIA H200"}}
    assert numerics_kind(gpu).endswith(", NVIDIA H200")
