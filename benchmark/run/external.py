"""Outside checkpoints on the leaderboard (``s2ap-bench evaluate``): a model file pruned anywhere is evaluated under
a suite's protocol (its data split, first n test points, threat model, PGD and AutoAttack settings) and written
as a result file that the tables, report and page treat like any other row, marked external.

The file is untrusted: it is read with ``weights_only=True`` and every key and shape is checked against the
architecture; the sparsity is counted from its weights; its sha256 is part of the result's config.

Results go under ``external/`` of the folder given (default ``build/evaluate/<suite>``, outside the committed
``results/``), never at a harness cell's path; ``s2ap-bench table FOLDER --baselines results/<suite>`` puts them
beside the suite's cells of the same protocol and sparsity, paired on the same test points.
"""

from __future__ import annotations

from pathlib import Path

from baselines.masking import sparsity_report
from benchmark.config import SuiteConfig, config_hash, identity_dict, to_dict
from benchmark.data import first_n
from benchmark.errors import BenchmarkError, ConfigError
from benchmark.evaluate.connectivity import effective_sparsity
from benchmark.evaluate.robustness import evaluate
from benchmark.measure import measure, resolve_device
from benchmark.models.files import load_model_file
from benchmark.models.robustbench import ZOO_MODEL
from benchmark.run.cells import build_model, load_data
from benchmark.run.dense_reference import DENSE
from benchmark.store import gate
from benchmark.store.paths import name_problem, suite_dir
from benchmark.store.results import load_results, result_record, write_result

PRUNER = "external"
EVALUATE_DIR = "build/evaluate"  # the default root of evaluated checkpoints: outside the committed results/


def external_identity(suite: SuiteConfig, method: str, sha256: str, sparsity: float) -> dict:
    """What defines an external result: the file's hash, the row it is listed in, and the protocol."""
    out = {"suite": suite.name, "external": {"method": method, "sha256": sha256},
           "dataset": identity_dict(suite.dataset), "model": suite.model, "structure": suite.structure,
           "sparsity": sparsity, "threat": to_dict(suite.threat), "evaluation": identity_dict(suite.evaluation)}
    if suite.normalize:
        out["normalize"] = True
    if suite.model == ZOO_MODEL:
        out["dense"] = to_dict(suite.dense)  # names the architecture
    return out


def suite_of_identity(identity: dict, device: str = "cpu") -> SuiteConfig:
    """The suite whose protocol an external result was evaluated under, rebuilt from its stored config."""
    from benchmark.config import build

    data = {k: identity[k] for k in ("dataset", "model", "structure", "threat", "evaluation", "normalize", "dense")
            if k in identity}
    return build(SuiteConfig, {"name": identity["suite"], "methods": ["random"], "device": device, **data})


def result_file(root: Path, suite: SuiteConfig, method: str, sparsity: float) -> Path:
    """``<root>/external/<dataset>/<model>/<method>/...``: apart from every path a harness cell writes."""
    return (root / "external" / suite.dataset.name / suite.model / method
            / f"{suite.structure}-s{sparsity:g}-seed0.json")


def check_method_name(method: str, *roots: Path) -> None:
    """A name (letters, digits, ``. _ + -``) that is neither "dense" (the unpruned reference row) nor a method the
    harness runs, and that no result of the harness in ``roots`` uses."""
    from s2ap import list_methods

    problem = name_problem(method)
    if problem:
        raise ConfigError(f"--method {method[:70]!r}: {problem}")
    if method.casefold() == DENSE:
        raise ConfigError("--method dense names the leaderboard's unpruned reference; an evaluated checkpoint has "
                          "pruned weights (its sparsity is counted), so give it its method's name")
    if method in list_methods():
        raise ConfigError(f"--method {method!r} is the name of a method the harness ran or runs (its cells have that "
                          "row and path); choose another name for the external checkpoint")
    for root in roots:
        results, _ = load_results(root) if root.is_dir() else ([], [])
        if any(r["cell"]["label"] == method and not r["cell"].get("external") for r in results):
            raise ConfigError(f"--method {method!r} is the name of a method the harness ran in {root}; choose "
                              "another name for the external checkpoint")


def evaluate_checkpoint(path: str | Path, *, method: str, suite: SuiteConfig, sparsity: float | None = None,
                        results_dir: str | Path | None = None, root: Path | None = None) -> tuple[Path, dict]:
    """Evaluate the checkpoint at ``path`` under ``suite``'s protocol and write its result (external, seed 0)
    under ``external/`` of the suite's folder in ``results_dir`` (default :data:`EVALUATE_DIR`), or of ``root``;
    returns (result path, result).

    ``sparsity`` is the column it is listed under (default: the achieved sparsity rounded to two decimals).
    """
    path = Path(path)
    root = root or suite_dir(suite, results_dir or EVALUATE_DIR)
    check_method_name(method, root, suite_dir(suite, None))
    if sparsity is not None and not 0 < sparsity < 1:
        raise ConfigError(f"--sparsity {sparsity}: must be in (0, 1), e.g. 0.9")
    device = resolve_device(suite.device)
    data = load_data(suite)
    model = load_model_file(path, build_model(suite, data), suite.model)
    report = {**sparsity_report(model), "effective": effective_sparsity(model, data.input_shape)}
    target = round(report["global"], 2) if sparsity is None else sparsity
    if not 0 < target < 1:
        raise BenchmarkError(f"checkpoint {path} has {100 * report['global']:.2f}% zero weights; pass --sparsity "
                             "to list it under a sparsity in (0, 1)")
    sha = gate.input_sha256(path, "checkpoint")
    identity = external_identity(suite, method, sha, target)
    x, y = first_n(data.test, suite.evaluation.n_examples)
    phases: dict = {"evaluate": {}}
    with measure(phases["evaluate"], device):
        evaluation = evaluate(model.to(device), x, y, suite.threat, suite.evaluation, device)
    result = result_record(
        suite=suite.name,
        cell={"method": method, "label": method, "pruner": PRUNER, "plugin": None, "external": True,
              "dataset": suite.dataset.name, "model": suite.model, "structure": suite.structure,
              "sparsity": target, "seed": 0},
        config=identity, config_hash=config_hash(identity),
        external={"checkpoint": str(path), "sha256": sha, "bytes": path.stat().st_size},
        report=report, target=target, evaluation=evaluation, phases=phases, device=device)
    out = result_file(root, suite, method, target)
    write_result(out, result, root)
    return out, result
