"""Marks on leaderboard rows: results of outside checkpoints (``s2ap-bench evaluate``) and results written from
a git tree with uncommitted changes (not reproducible from their recorded commit)."""

from __future__ import annotations

EXTERNAL = "external"
DIRTY = "dirty tree"


def is_external(r: dict) -> bool:
    return bool(r["cell"].get("external"))


def is_dirty(r: dict) -> bool:
    return ((r.get("environment") or {}).get("git") or {}).get("dirty") is True


def marked(label: str, results: list[dict]) -> str:
    """``label`` with ``[external]`` and/or ``[dirty tree]`` where any of ``results`` is so."""
    tags = [tag for tag, test in ((EXTERNAL, is_external), (DIRTY, is_dirty)) if any(test(r) for r in results)]
    return f"{label} [{', '.join(tags)}]" if tags else label


def marks_note(results: list[dict]) -> str:
    """The sentence explaining the marks that ``results`` carry (empty if none)."""
    parts = []
    if any(is_external(r) for r in results):
        parts.append(f"[{EXTERNAL}]: a checkpoint pruned outside the harness, evaluated under the same protocol by "
                     "s2ap-bench evaluate (sparsity counted from its weights)")
    if any(is_dirty(r) for r in results):
        parts.append(f"[{DIRTY}]: written from a git tree with uncommitted changes, so not reproducible from the "
                     "recorded commit")
    return " " + "; ".join(parts) + "." if parts else ""
