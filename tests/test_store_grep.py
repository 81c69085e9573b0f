"""The store gate is the only way to touch files: a walk over the code (benchmark/, baselines/, s2ap/) finds every
call that opens, loads, saves, reads, writes or removes a file, and fails on one outside the store room that is
not in the allow-list below (each entry says why it may stay)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "baselines", "s2ap")
STORE_ROOM = ("benchmark/store/gate.py", "benchmark/store/checkpoints.py")
FILE_METHODS = {"write_text", "write_bytes", "read_text", "read_bytes", "savefig", "open", "unlink", "mkdir", "touch",
                "rglob", "rmdir", "symlink_to", "fdopen"}
ALLOWED = {
    ("benchmark/config/suite.py", ".read_text"):
        "a packaged suite YAML read through importlib.resources (installed package data, not a results folder)",
    ("benchmark/data/datasets.py", ".open"):
        "data-set loaders read and unpack the data folder (gzip.open of the MNIST-family archives)",
    ("benchmark/data/datasets.py", "open"):
        "data-set loaders write the unpacked MNIST-family files into the data folder (not a results folder)",
    ("benchmark/data/datasets.py", ".mkdir"): "the data-set loaders create the data folder's raw/ folder",
    ("benchmark/data/datasets.py", ".symlink_to"): "the data-set loaders link an MNIST-family archive into raw/",
    ("benchmark/data/datasets.py", ".unlink"): "the data-set loaders remove a half-unpacked file of the data folder",
    ("benchmark/measure.py", "open"): "the machine description reads /proc/cpuinfo (not a results folder)",
    ("benchmark/run/threads.py", ".read_text"):
        "the busy-machine check reads /proc/loadavg and /proc/<pid>/stat (not a results folder)",
    ("benchmark/report/plots.py", ".savefig"):
        "renders a figure into an in-memory buffer; the bytes are written by gate.write_bytes",
}


def file_calls(tree: ast.AST) -> list[str]:
    """Each call in ``tree`` that touches a file, as the name the allow-list uses: ``open``, ``os.open``,
    ``torch.load``, ``torch.save``, ``shutil.rmtree`` or ``.<method>`` (calls on the gate itself excluded)."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("open", "rmtree"):
            found.append(f.id)
        elif isinstance(f, ast.Attribute):
            owner = f.value.id if isinstance(f.value, ast.Name) else None
            if owner == "gate":
                continue
            if (owner, f.attr) in (("os", "open"), ("torch", "load"), ("torch", "save"), ("shutil", "rmtree")):
                found.append(f"{owner}.{f.attr}")
            elif f.attr in FILE_METHODS:
                found.append(f".{f.attr}")
    return found


def hits() -> set[tuple[str, str]]:
    out = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in STORE_ROOM:
                continue
            out |= {(rel, call) for call in file_calls(ast.parse(path.read_text(), rel))}
    return out


def test_no_file_is_touched_outside_the_store_gate() -> None:
    new = sorted(hits() - set(ALLOWED))
    assert not new, ("file access outside benchmark/store/gate.py; route it through the gate or add it to ALLOWED "
                     f"with a reason: {new}")


def test_every_exception_is_still_needed() -> None:
    assert not set(ALLOWED) - hits(), "an allow-list entry no longer matches any code; remove it"


def test_the_walk_finds_each_kind_of_call() -> None:
    code = ("open(p)\nos.open(p, 0)\ntorch.load(p)\ntorch.save(x, p)\nshutil.rmtree(p)\np.write_text('')\n"
            "p.read_bytes()\nfig.savefig(p)\ngate.write_text(r, p, '')\n")
    assert file_calls(ast.parse(code)) == ["open", "os.open", "torch.load", "torch.save", "shutil.rmtree",
                                           ".write_text", ".read_bytes", ".savefig"]
