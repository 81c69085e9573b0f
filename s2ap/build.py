"""Build a pruner from a method name: ``"hydra"`` or any score-based pruner with ``"+s2ap"`` appended."""

from __future__ import annotations

from typing import Any

from baselines.base import PRUNERS, Pruner, get_pruner, list_pruners
from s2ap.plugin import S2AP, S2APSettings

PLUGIN_SUFFIX = "+s2ap"


def split_method(method: str) -> tuple[str, bool]:
    """``"hydra+s2ap"`` -> ``("hydra", True)``."""
    if method.endswith(PLUGIN_SUFFIX):
        return method[: -len(PLUGIN_SUFFIX)], True
    return method, False


def list_methods() -> list[str]:
    """Every registered pruner, plus a ``+s2ap`` variant for each one with learnt scores."""
    out = []
    for name in list_pruners():
        out.append(name)
        if get_pruner(name).has_scores:
            out.append(name + PLUGIN_SUFFIX)
    return out


def check_method(method: str) -> None:
    """Raise ValueError with a did-you-mean message for an unknown method or a plug-in it cannot take."""
    base, plugin = split_method(method)
    if base not in PRUNERS:
        raise ValueError(PRUNERS.unknown_message(base))
    if plugin and not get_pruner(base).has_scores:
        why = get_pruner(base).no_s2ap_reason or f"pruner {base!r} has none"
        raise ValueError(f"method {method!r}: S2AP needs learnt scores; {why}")


def build_pruner(
    method: str,
    sparsity: float,
    *,
    s2ap: S2APSettings | None = None,
    **options: Any,
) -> Pruner:
    """Instantiate ``method`` at ``sparsity``; ``+s2ap`` wraps the base pruner with the plug-in."""
    check_method(method)
    base_name, plugin = split_method(method)
    base = get_pruner(base_name)(sparsity, **options)
    return S2AP(base, s2ap) if plugin else base
