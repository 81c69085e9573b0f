"""Command line: ``s2ap-bench run | sweep | ls | table | report | validate | evaluate | verify``. A thin layer over the
library functions."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmark.errors import BenchmarkError, ConfigError


def _suite(args: argparse.Namespace):
    from benchmark.config import load_suite

    overrides = list(args.set or [])
    if args.seeds:
        overrides.append(f"seeds=[{args.seeds}]")
    if args.sparsities:
        overrides.append(f"sparsities=[{args.sparsities}]")
    if args.device:
        overrides.append(f"device={args.device}")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if getattr(args, "methods", None) else None
    return load_suite(args.suite, overrides, methods)


def print_pilot_seeds(pilot: Path, points: float) -> None:
    """The seeds a target difference (in points) needs, from a pilot's results (``run --dry-run``)."""
    from benchmark.report.claims import pilot_seed_lines
    from benchmark.store.results import load_results

    if not 0 < points < 100:
        raise ConfigError(f"--target-difference {points}: give the difference in accuracy points, in (0, 100)")
    if not pilot.is_dir():
        raise ConfigError(f"--pilot {pilot}: no such results folder; give a folder with results of this protocol")
    results, _ = load_results(pilot)
    print(f"pilot: {pilot} ({len(results)} results)")
    for line in pilot_seed_lines(results, points / 100):
        print(line)


def measured_steps(suite, args: argparse.Namespace):
    """With ``--measure``, one real step of each phase timed here (for ``--dry-run`` estimates); else None."""
    if not args.measure:
        return None
    from benchmark.progress import Stages
    from benchmark.run.cost import measure_steps
    from benchmark.run.threads import resolve_threads, torch_threads

    with torch_threads(resolve_threads(args.threads, args.workers)), \
            Stages("measuring one step of each phase", 3 + len(suite.methods), not args.no_progress) as bar:
        return measure_steps(suite, on_stage=bar.start)


def add_pilot_arguments(parser: argparse.ArgumentParser) -> None:
    """``--target-difference`` and ``--pilot``, for ``run --dry-run`` and ``sweep --dry-run``."""
    parser.add_argument("--target-difference", type=float, metavar="POINTS",
                        help="with --dry-run: the seeds each seed-level comparison needs to detect this many accuracy "
                             "points at 80 %% power, from the per-seed spread of a pilot's results")
    parser.add_argument("--pilot", metavar="DIR",
                        help="with --target-difference: the pilot's results folder (default: the suite's own)")


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark.run.suite import baseline_keys, pending_cells, run_suite, write_suite_tables
    from benchmark.run.threads import resolve_threads, torch_threads
    from benchmark.store.paths import suite_dir

    suite = _suite(args)
    if suite.sweep:  # its swept arms take the values the sweep record selects, not the suite's placeholders
        raise ConfigError(f"suite {suite.name!r} has a sweep: block, so `run` would compute its swept arms at the "
                          f"placeholder values; use `s2ap-bench sweep {args.suite}` (--dry-run to list it), or "
                          f"--set 'sweep={{}}' to run the values as written")
    root = suite_dir(suite, args.results_dir)
    if args.dry_run:
        from benchmark.run.cost import describe

        times = measured_steps(suite, args)
        for line in describe(suite, times, root, baseline_keys(baseline_folders(args.baselines))):
            print(line)
        print(f"{len(suite.cells())} cells -> {root}")
        from benchmark.store.migrate import needs_migration

        legacy = needs_migration(root) if root.is_dir() else []
        if legacy:
            print(f"note: {len(legacy)} result(s) keep .pt masks and models without their sha256, so they count as "
                  f"not done; run s2ap-bench migrate {root} first (nothing is recomputed)")
        if args.target_difference is not None:
            print_pilot_seeds(Path(args.pilot) if args.pilot else root, args.target_difference)
        return 0
    if args.evaluation_only:
        from benchmark.run.evaluation_only import recompute_suite

        with torch_threads(resolve_threads(args.threads, 1)):
            failed = recompute_suite(suite, root)
        write_suite_tables(root, print)
        if failed:
            raise BenchmarkError(f"{failed} of {len(suite.cells())} cells could not be recomputed evaluation-only "
                                 "(see FAILED lines above)")
        return 0
    failure: BenchmarkError | None = None
    baselines = baseline_folders(args.baselines)
    todo = len(pending_cells(suite, root, args.force, baseline_keys(baselines))) if args.summary else 0
    start = time.monotonic()
    force_references = args.force and not args.methods  # forcing some methods keeps the dense references
    try:
        if args.executor == "local":
            run_suite(suite, results_dir=args.results_dir, force=args.force, progress=not args.no_progress,
                      workers=args.workers, threads=args.threads, tables=False, baselines=baselines,
                      force_references=force_references)
        else:
            from benchmark.run.slurm import parse_parameters, submit_suite

            params = parse_parameters(list(args.slurm or []))
            submit_suite(suite, kind=args.executor, results_dir=args.results_dir, force=args.force,
                         parameters=params, force_references=force_references)
    except BenchmarkError as e:  # the tables still show every finished cell
        failure = e
    if args.summary:
        print_summary(suite.name, root, todo, len(suite.cells()), time.monotonic() - start, args, baselines)
    else:
        written = write_suite_tables(root, print, baselines)
        if written:
            from benchmark.store import gate

            print(gate.read_bytes(root, written[0], limit=64 << 20).decode("utf-8", "replace"))
    if failure is not None:
        raise failure
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import json

    from benchmark.config.sweeps import parse_grid
    from benchmark.run.sweep import plan_lines, run_sweep

    for item in args.set_grid or []:
        args.set = [*(args.set or []), f"sweep.grid={json.dumps(parse_grid(item))}"]
    args.seeds = args.sparsities = args.device = None
    suite = _suite(args)
    if not suite.sweep:
        raise ConfigError(f"suite {suite.name!r} has no sweep: block; give --set-grid 's2ap.gamma=[0.01,0.05]'")
    if args.dry_run:
        times = measured_steps(suite, args)
        for line in plan_lines(suite, times, args.results_dir):
            print(line)
        if args.target_difference is not None:
            from benchmark.store.paths import suite_dir

            print_pilot_seeds(Path(args.pilot) if args.pilot else suite_dir(suite, args.results_dir),
                              args.target_difference)
        return 0
    run_sweep(suite, results_dir=args.results_dir, force=args.force, progress=not args.no_progress,
              workers=args.workers, threads=args.threads, test_stage=not args.selection_only)
    return 0


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:02.0f} s"


def print_summary(name: str, root: Path, computed: int, cells: int, seconds: float, args: argparse.Namespace,
                  baselines: list[Path]) -> None:
    """What ``run --summary`` prints after the run: what was computed and how long it took, the leaderboard with
    intervals, the S2AP verdicts, the page it wrote and the next command to try."""
    from benchmark.report import write_report
    from benchmark.report.answer import summary_lines
    from benchmark.report.generate import comparable_results
    from benchmark.run.threads import resolve_threads

    if not root.is_dir():
        return
    write_report(root, baselines)
    results, problems = comparable_results(root, baselines)
    print()
    print(f"{name}: {computed} of {cells} cells computed in {_duration(seconds)} ({cells - computed} up to date "
          f"or reused; {args.workers} worker(s) x {resolve_threads(args.threads, args.workers)} thread(s))")
    for line in summary_lines(results):
        print(line)
    if problems:
        print(f"{len(problems)} result file(s) skipped: s2ap-bench validate {root}")
    print(f"page: {root / 'index.html'}   tables: {root / 'leaderboard.md'}")
    print("next: s2ap-bench ls suites   (every suite with its cost; then s2ap-bench run SUITE --dry-run --measure "
          "for its time here), or add your pruner: docs/adding-a-pruner.md")


def first_line(text: str | None, width: int = 96) -> str:
    """The first sentence of a docstring or description, on one line of at most ``width`` characters."""
    words = " ".join((text or "").replace("``", "").replace(":func:", "").split())
    if ". " in words:
        words = words[: words.index(". ") + 1]
    return words if len(words) <= width else words[: width - 3].rstrip() + "..."


def ls_sections(what: str | None) -> dict[str, list[tuple[str, str]]]:
    """(name, one-line description) of every method, model, data set and suite (each suite with its cost)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    if what in (None, "pruners"):
        from baselines.base import get_pruner
        from s2ap import list_methods, split_method

        rows = []
        for name in list_methods():
            base, plugin = split_method(name)
            cls = get_pruner(base)
            if plugin:
                rows.append((name, f"{base} with the S2AP plug-in in its mask search"))
                continue
            taxonomy = "; ".join(f"{k} {v}" for k, v in cls.taxonomy.items())
            s2ap = "+s2ap" if cls.has_scores else f"no +s2ap: {cls.no_s2ap_reason or 'no learnt scores'}"
            rows.append((name, f"{first_line(cls.__doc__)}\n    {cls.pipeline} training"
                               + (f"; {taxonomy}" if taxonomy else "") + f"; {s2ap}"))
        sections["pruners"] = rows
    if what in (None, "models"):
        from benchmark.models.registry import MODELS

        sections["models"] = [(n, first_line(MODELS.get(n).__doc__)) for n in MODELS.names()]
    if what in (None, "datasets"):
        from benchmark.data import DATASETS

        sections["datasets"] = [(n, first_line(DATASETS.get(n).__doc__)) for n in DATASETS.names()]
    if what in (None, "suites"):
        from benchmark.config import load_suite, packaged_suites
        from benchmark.run.cost import suite_summary
        from benchmark.store.paths import suite_dir

        rows = []
        for name in packaged_suites():
            suite = load_suite(name)
            rows.append((name, f"{first_line(suite.description)}\n    cost: "
                               f"{suite_summary(suite, suite_dir(suite, None))}"))
        sections["suites"] = rows
    return sections


def cmd_ls(args: argparse.Namespace) -> int:
    for section, rows in ls_sections(args.what).items():
        print(f"{section}:")
        width = max(len(name) for name, _ in rows)
        for name, text in rows:
            print(f"  {name:<{width}}  {text}")
    return 0


def baseline_folders(paths: list[str] | None) -> list[Path]:
    """The ``--baselines`` folders, each an existing results folder."""
    return [results_folder(p) for p in paths or []]


def results_folder(path: str) -> Path:
    """``path`` as an existing results folder, or a one-line error naming it."""
    root = Path(path)
    if not root.is_dir():
        raise BenchmarkError(f"results folder {root} does not exist; give a suite's results folder, e.g. "
                             "results/digits-smoke, or run a suite first (s2ap-bench run)")
    return root


def cmd_table(args: argparse.Namespace) -> int:
    from benchmark.report import write_report, write_tables

    root = results_folder(args.results_dir)
    written, problems = (write_report if args.command == "report" else write_tables)(
        root, baseline_folders(args.baselines))
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    for p in written:
        print(f"wrote {p}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from benchmark.store.results import read_result, result_files

    root = Path(args.results_dir)
    if not root.exists():
        raise BenchmarkError(f"results folder {root} does not exist")
    if root.is_file() and root.suffix in (".yaml", ".yml"):  # a suite file: check its configuration
        from benchmark.config import load_suite

        suite = load_suite(str(root))
        print(f"{root}: valid suite {suite.name!r} with {len(suite.cells())} cells")
        return 0
    if root.is_file() and root.suffix != ".json":
        raise BenchmarkError(f"{root} is neither a result file (.json) nor a suite file (.yaml); pass a results "
                             "folder, a result file or a suite file")
    files = result_files(root) if root.is_dir() else [root]
    bad = 0
    for p in files:
        try:
            read_result(p)
        except BenchmarkError as e:
            print(f"invalid: {e}", file=sys.stderr)
            bad += 1
    print(f"{len(files) - bad} valid, {bad} invalid result files under {root}")
    return 1 if bad else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from benchmark.config import load_suite
    from benchmark.report import write_tables
    from benchmark.run.external import evaluate_checkpoint
    from benchmark.run.threads import busy_machine, resolve_threads, torch_threads
    from benchmark.store.paths import suite_dir

    overrides = list(args.set or [])
    for flag, key in ((args.model, "model"), (args.dataset, "dataset.name"), (args.eps, "threat.eps"),
                      (args.n_examples, "evaluation.n_examples"), (args.autoattack, "evaluation.autoattack"),
                      (args.device, "device")):
        if flag is not None:
            overrides.append(f"{key}={flag}")
    suite = load_suite(args.suite, overrides)
    threads = resolve_threads(args.threads)
    warning = busy_machine(threads)
    if warning:
        print(warning, file=sys.stderr)
    with torch_threads(threads):
        out, result = evaluate_checkpoint(args.checkpoint, method=args.method, suite=suite, sparsity=args.sparsity,
                                          results_dir=args.results_dir)
    ev = result["evaluation"]
    aa = ev["autoattack"]["robust_accuracy"] if ev["autoattack"] else None
    print(f"{args.method}: clean {ev['clean_accuracy']:.3f}  PGD {ev['pgd']['accuracy']:.3f}  "
          f"AA {'-' if aa is None else f'{aa:.3f}'}  sparsity {result['sparsity']['achieved']:.4f} -> {out}")
    root, suite_folder = out.parents[4], suite_dir(suite, None)
    baselines = [suite_folder] if suite_folder.is_dir() and suite_folder.resolve() != root.resolve() else []
    written, problems = write_tables(root, baselines)
    for line in problems:
        print(f"skipped: {line}")
    beside = f" beside the cells of {suite_folder} with its protocol and sparsity" if baselines else ""
    print(f"leaderboard{beside}: {written[0]}  (the page: s2ap-bench report {root}"
          + "".join(f" --baselines {b}" for b in baselines) + ")")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import math

    from benchmark.run.noise import DEFAULT_SETTINGS, parse_setting
    from benchmark.run.verify import SHOWN, report_lines, verify, within_noise

    root = results_folder(args.results_dir)
    if args.threads is not None and args.threads < 1:
        raise BenchmarkError(f"--threads {args.threads}: give at least 1 thread, or leave it out to use the recorded "
                             "count")
    if not math.isfinite(args.tolerance) or args.tolerance < 0:
        raise ConfigError(f"--tolerance {args.tolerance}: give a finite number >= 0, e.g. 1e-6")
    if args.keep:
        keep, base = Path(args.keep).resolve(), root.resolve()
        if keep == base or base in keep.parents or keep in base.parents:
            raise ConfigError(f"--keep {args.keep}: it overlaps the results folder {root} being verified; give a "
                              "folder outside it")
    noise = None if args.noise is None else [parse_setting(s) for s in args.noise or DEFAULT_SETTINGS]
    checks = verify(root, patterns=args.cell, n=args.n, seed=args.seed, tolerance=args.tolerance,
                    device=args.device, scratch=Path(args.keep) if args.keep else None, threads=args.threads,
                    noise=noise, log=lambda line: print(line, file=sys.stderr))
    for line in report_lines(checks, args.tolerance):
        print(line)
    if noise:
        from benchmark.report.generate import comparable_results
        from benchmark.report.significance import effects_beside_noise

        results, _ = comparable_results(root)
        for c in checks:
            cell = next(r for r in results if r.get("_path") == c.name)
            spread = {path: c.noise.spread(path) for _, path in SHOWN}  # type: ignore[union-attr]
            for line in effects_beside_noise(results, cell, spread):
                print(f"{c.name}: {line}")
    return 1 if any(c.differences and not within_noise(c) for c in checks) else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from benchmark.run.effective import add_effective_sparsity
    from benchmark.store.migrate import migrate

    folder = results_folder(args.results_dir)
    migrate(folder)  # refuses a dirty git tree before either step changes a file
    add_effective_sparsity(folder)
    return 0


def check_ranges(args: argparse.Namespace, positive: tuple[str, ...], fractions: tuple[str, ...] = ()) -> None:
    """Refuse, in one line with exit 2, a count below 1 or a sparsity outside (0, 1) among ``args``."""
    import math

    for name in positive:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    for name in fractions:
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and 0 < value < 1):
            raise ConfigError(f"--{name.replace('_', '-')} {value}: must be a number in (0, 1), e.g. 0.99")


def cmd_schema(args: argparse.Namespace) -> int:
    import json

    if args.what == "suite":
        from benchmark.config.json_schema import suite_schema

        schema = suite_schema()
    else:
        from benchmark.store.schema import result_schema

        schema = result_schema()
    print(json.dumps(schema, indent=2))
    return 0


def cmd_bench_s2ap(args: argparse.Namespace) -> int:
    from benchmark.bench.s2ap import print_overhead, s2ap_overhead

    check_ranges(args, ("repeats", "threads"), ("sparsity",))
    report = s2ap_overhead(args.suite, base=args.base, repeats=args.repeats, sparsity=args.sparsity,
                           device=args.device, overrides=list(args.set or []), threads=args.threads,
                           progress=not args.no_progress, clock=args.clock)
    print_overhead(report)
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    from benchmark.bench.speed import print_speed, speed

    check_ranges(args, ("batch_size", "batches", "steps", "repeats", "threads", "eval_examples", "eval_batch_size"))
    report = speed(args.model, args.device, batch_size=args.batch_size, batches=args.batches, steps=args.steps,
                   repeats=args.repeats, eval_examples=args.eval_examples, eval_batch_size=args.eval_batch_size,
                   autoattack_version=args.autoattack, bf16=args.bf16, channels_last=args.channels_last,
                   fit_steps=args.fit_steps, threads=args.threads, progress=not args.no_progress)
    print_speed(report)
    return 0


THREADS_HELP = ("torch CPU threads per worker (default: $OMP_NUM_THREADS if set, else 1, the fastest per core on a "
                "shared machine); recorded in the results")


BASELINES_HELP = ("a results folder (repeatable), e.g. results/digits-smoke, whose cells with the same protocol, "
                  "sparsity and seed (the same comparison key) are shown and paired beside this folder's; only "
                  "this folder is written")


def package_version() -> str:
    """The installed version of s2ap-bench (``unknown`` when run from a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s2ap-bench")
    except PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2ap-bench", description="Adversarial pruning benchmark (S2AP plug-in).")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a suite (packaged name or YAML file) and write its leaderboard")
    run.add_argument("suite", nargs="?", default="digits-smoke", help="suite name or YAML path")
    run.add_argument("--results-dir", help="root folder for results (default: the suite's results_dir)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. search.epochs=3")
    run.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    run.add_argument("--sparsities", help="comma-separated sparsities, e.g. 0.9,0.99")
    run.add_argument("--methods", help="comma-separated subset of the suite's methods (by label or name, with the "
                                       "suite's settings), e.g. hydra,hydra+s2ap; a name the suite lacks runs with "
                                       "default settings")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--workers", type=int, default=1, help="cells run in parallel processes (default 1)")
    run.add_argument("--threads", type=int, help=THREADS_HELP)
    run.add_argument("--force", action="store_true", help="re-run cells even if their result is up to date (with "
                     "--methods only those methods' cells: the dense references are kept)")
    run.add_argument("--dry-run", action="store_true",
                     help="list the cells (done ones marked) with their estimated cost and exit (reads no data)")
    add_pilot_arguments(run)
    run.add_argument("--evaluation-only", action="store_true",
                     help="recompute only the minimum-norm evaluation (evaluation.min_norm*) of cells with a result, "
                          "from each cell's saved model; every other figure is kept")
    run.add_argument("--measure", action="store_true",
                     help="with --dry-run: time one real step of each phase here and estimate the time left")
    run.add_argument("--executor", choices=["local", "slurm", "local-submitit"], default="local",
                     help="local (default; --workers processes), or one submitit job per cell")
    run.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                     help="a submitit parameter, e.g. slurm_partition=gpu or timeout_min=720")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--baselines", action="append", metavar="FOLDER", help=BASELINES_HELP + "; a cell with the "
                     "comparison key of one of its cells is not run but reused")
    run.add_argument("--summary", action="store_true",
                     help="after the run, write the page (as `report` does) and print a short summary instead of the "
                          "whole leaderboard: what was computed and in how long, accuracies with 95 %% intervals, "
                          "the +S2AP verdicts, the page's path and the next command")
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="tune an S2AP setting per (method, sparsity) on the validation split, then run "
                                      "the suite with the selected values",
                        description="Runs a grid of one S2AP setting for the suite's +s2ap methods (the suite's "
                                    "sweep: block, or --set-grid), scores each value by PGD robust accuracy on the "
                                    "validation split (never the test points), selects per (method, sparsity) the "
                                    "best mean over the sweep seeds, writes the curve and the selection to "
                                    "<results>/<suite>/sweep/, then runs the suite with the selected values and its "
                                    "own test evaluation.")
    sw.add_argument("suite", help="suite name or YAML path")
    sw.add_argument("--set-grid", action="append", metavar="KEY=[VALUES]",
                    help="the grid, e.g. 's2ap.gamma=[0.005,0.01,0.02,0.05,0.1]' (replaces the suite's sweep grid)")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field, e.g. sweep.seeds=[0,1]")
    sw.add_argument("--results-dir", help="root folder for results (default: the suite's results_dir)")
    sw.add_argument("--workers", type=int, default=1, help="cells run in parallel processes (default 1)")
    sw.add_argument("--threads", type=int, help=THREADS_HELP)
    sw.add_argument("--force", action="store_true", help="re-run cells even if their result is up to date")
    sw.add_argument("--selection-only", action="store_true", help="stop after the selection and its record")
    sw.add_argument("--dry-run", action="store_true", help="list both stages' cells with their cost and exit")
    sw.add_argument("--measure", action="store_true", help="with --dry-run: time one real step of each phase here")
    add_pilot_arguments(sw)
    sw.add_argument("--no-progress", action="store_true", help="no progress bars")
    sw.set_defaults(func=cmd_sweep)

    ls = sub.add_parser("ls", help="list pruners, models, data sets and suites, one line each (suites with their "
                                   "cost)")
    ls.add_argument("what", nargs="?", choices=["pruners", "models", "datasets", "suites"])
    ls.set_defaults(func=cmd_ls)

    table = sub.add_parser("table", help="regenerate leaderboard tables (Markdown, LaTeX, CSV) from a results "
                                         "folder")
    table.add_argument("results_dir", help="a suite's results folder, e.g. results/digits-smoke")
    table.add_argument("--baselines", action="append", metavar="FOLDER", help=BASELINES_HELP)
    table.set_defaults(func=cmd_table)

    report = sub.add_parser("report", help="regenerate tables, plots and the HTML page (index.html) of a results "
                                           "folder")
    report.add_argument("results_dir", help="a suite's results folder, e.g. results/digits-smoke")
    report.add_argument("--baselines", action="append", metavar="FOLDER", help=BASELINES_HELP)
    report.set_defaults(func=cmd_table)

    bench = sub.add_parser("bench", help="measurements of the harness itself",
                           description="Measurements of the harness itself: the overhead of the S2AP plug-in per "
                                       "mask-search epoch (bench s2ap), and the harness's images/s against a bare "
                                       "PyTorch loop for PGD training and AutoAttack (bench speed).")
    targets = bench.add_subparsers(dest="target", required=True, metavar="{s2ap,speed}")
    defaults = argparse.ArgumentDefaultsHelpFormatter
    b_s2ap = targets.add_parser("s2ap", help="time per mask-search epoch, base vs +S2AP, interleaved",
                                formatter_class=defaults,
                                description="Seconds per mask-search epoch of a base pruner and its +s2ap variant "
                                            "(reusing and regenerating adversarial examples), the arms alternating "
                                            "in every repeat; prints the medians and the ratios to the base.")
    b_s2ap.add_argument("--suite", default="digits-smoke", help="suite whose data, model and budgets are used")
    b_s2ap.add_argument("--base", default="hydra", help="score-based pruner to compare with its +s2ap variant")
    b_s2ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall clock, or the process's CPU time (steadier on a shared machine, with --threads 1)")
    b_s2ap.add_argument("--repeats", type=int, default=5, help="timed epochs per arm (after one warm-up epoch)")
    b_s2ap.add_argument("--sparsity", type=float, default=0.99, help="target sparsity of the masks searched")
    b_s2ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the epochs run")
    b_s2ap.add_argument("--threads", type=int, help=THREADS_HELP)
    b_s2ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite field")
    b_s2ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    b_s2ap.set_defaults(func=cmd_bench_s2ap)
    b_speed = targets.add_parser("speed", help="images/s of the harness vs plain PyTorch: PGD training, AutoAttack",
                                 formatter_class=defaults,
                                 description="Images per second of the harness against the same work written as a "
                                             "bare PyTorch loop, on synthetic 32x32 data: PGD-k adversarial "
                                             "training and AutoAttack, the two arms alternating; target >= 0.95x.")
    b_speed.add_argument("--model", default="resnet18", help="a registered model")
    b_speed.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where it runs")
    b_speed.add_argument("--batch-size", type=int, default=128, help="training batch size")
    b_speed.add_argument("--batches", type=int, default=8, help="training batches per timed repeat")
    b_speed.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    b_speed.add_argument("--repeats", type=int, default=3, help="timed repeats per arm (after one warm-up)")
    b_speed.add_argument("--threads", type=int, help=THREADS_HELP)
    b_speed.add_argument("--no-progress", action="store_true", help="no progress bar")
    b_speed.add_argument("--eval-examples", type=int, default=100, help="points attacked by AutoAttack")
    b_speed.add_argument("--eval-batch-size", type=int, default=500, help="AutoAttack batch size")
    b_speed.add_argument("--autoattack", default="fast", choices=["fast", "standard"], help="AutoAttack version")
    b_speed.add_argument("--fit-steps", type=int, default=40,
                         help="clean training steps before AutoAttack, so that its points are attacked")
    b_speed.add_argument("--bf16", action="store_true", help="bf16 autocast in training (both arms)")
    b_speed.add_argument("--channels-last", action="store_true", help="channels-last in training (both arms)")
    b_speed.set_defaults(func=cmd_bench_speed)

    ev = sub.add_parser("evaluate", help="evaluate a pruned checkpoint from anywhere under a suite's protocol and "
                                         "write it as an external leaderboard row beside the suite's cells")
    ev.add_argument("checkpoint", help="a state dict file (torch.save), read with weights_only=True")
    ev.add_argument("--method", required=True, help="the name its row gets in the leaderboard")
    ev.add_argument("--suite", default="digits-smoke", help="suite (name or YAML) whose protocol and results folder "
                                                            "are used (default digits-smoke)")
    ev.add_argument("--model", help="registered architecture the checkpoint fits (default: the suite's)")
    ev.add_argument("--dataset", help="data set (default: the suite's)")
    ev.add_argument("--eps", help="L-inf radius, e.g. 8/255 (default: the suite's threat model)")
    ev.add_argument("--n-examples", type=int, help="first n test points (default: the suite's)")
    ev.add_argument("--autoattack", choices=["standard", "fast", "none"], help="default: the suite's")
    ev.add_argument("--sparsity", type=float,
                    help="sparsity column to list it under (default: its zero weights, rounded to 0.01)")
    ev.add_argument("--results-dir", help="root folder; the result goes under <it>/<suite>/external/ (default "
                                          "build/evaluate, outside the committed results/)")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a suite field")
    ev.add_argument("--device", choices=["auto", "cpu", "cuda"])
    ev.add_argument("--threads", type=int, help=THREADS_HELP)
    ev.set_defaults(func=cmd_evaluate)

    ver = sub.add_parser("verify", help="recompute cells of a results folder from their stored configs and compare "
                                        "every stored figure")
    ver.add_argument("results_dir", help="a suite's results folder, e.g. results/digits-smoke")
    ver.add_argument("--cell", action="append", metavar="PART_OF_PATH",
                     help="verify the results whose path contains this (repeatable), e.g. hydra/unstructured-s0.9")
    ver.add_argument("-n", type=int, default=1, help="without --cell: how many cells to draw at random (default 1)")
    ver.add_argument("--seed", type=int, default=0, help="seed of the random draw (default 0)")
    ver.add_argument("--tolerance", type=float, default=1e-6,
                     help="largest absolute difference allowed on a number (default 1e-6; other values must be equal)")
    ver.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="default cpu")
    ver.add_argument("--threads", type=int,
                     help="torch CPU threads (default: as many as each result recorded, so that the last bits match)")
    ver.add_argument("--keep", metavar="DIR", help="keep the recomputed results in DIR (default: a temporary folder)")
    ver.add_argument("--noise", nargs="*", metavar="SETTING",
                     help="measure the numerical noise: recompute each cell in a child process under every SETTING "
                          "(native, capability=default|avx2|avx512, threads=N, or both joined by a comma; default: "
                          "native capability=avx2 capability=default), report the spread of every figure beside the "
                          "folder's effects, and judge differences against it; the first setting is the one compared")
    ver.set_defaults(func=cmd_verify)

    mig = sub.add_parser("migrate", help="bring a results folder up to date without recomputing: .pt masks and models "
                                         "to safetensors with their sha256, and the effective sparsity of results "
                                         "written before it was recorded, from their stored models (run from a "
                                         "clean git tree; figures and hashes unchanged)")
    mig.add_argument("results_dir", help="a suite's results folder, e.g. results/digits-smoke")
    mig.set_defaults(func=cmd_migrate)

    sch = sub.add_parser("schema", help="print the JSON Schema of a suite file or a result file")
    sch.add_argument("what", choices=["suite", "result"])
    sch.set_defaults(func=cmd_schema)

    val = sub.add_parser("validate", help="check result files against the schema, or a suite file")
    val.add_argument("results_dir", help="a results folder, one result file (.json) or a suite file (.yaml)")
    val.set_defaults(func=cmd_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchmarkError as e:
        print(f"s2ap-bench: error: {' '.join(str(e).splitlines())}", file=sys.stderr)  # one line, always
        return e.exit_code
    except OSError as e:  # one the code did not foresee: still one line naming the path and the cause
        from benchmark.store.files import os_error_text

        print(f"s2ap-bench: error: {os_error_text(e)}", file=sys.stderr)
        return 1
    except (RuntimeError, MemoryError) as e:  # out of memory anywhere else: one line with the fix
        from benchmark.errors import out_of_memory
        from benchmark.measure import OUT_OF_MEMORY

        if not isinstance(e, OUT_OF_MEMORY):
            raise
        print(f"s2ap-bench: error: {out_of_memory(args.command, 'this machine')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("s2ap-bench: interrupted; finished cells are kept, re-run to complete the rest", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
