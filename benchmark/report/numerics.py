"""Which numerical environments (CPU model, the kernel path torch dispatches to, BLAS) a table's results were
computed on. Results of one environment rerun bit for bit; across environments the same cell moves within the
numerical noise (``s2ap-bench verify --noise`` measures it), so a table says when it mixes them."""

from __future__ import annotations

from collections import Counter

NOT_RECORDED = "not recorded"


def numerics_kind(r: dict) -> str:
    """``"AMD EPYC, AVX512, mkl 2024.2-Product"`` for a result that recorded its numerics, else "not recorded"."""
    env = r.get("environment") or {}
    n = env.get("numerics") or {}
    if not n:
        return NOT_RECORDED
    gpu = [str(env.get("device_name"))] if str(env.get("device", "cpu")).startswith("cuda") else []
    parts = [n.get("cpu_model") or "unknown CPU", n.get("cpu_capability") or "unknown kernel path",
             n.get("blas") or "unknown BLAS"] + gpu
    return ", ".join(str(p) for p in parts)


def numerics_note(results: list[dict]) -> str:
    """One sentence for a table's caption: the environments and how many results each computed ("" when every
    result recorded the same one)."""
    counts = Counter(numerics_kind(r) for r in results)
    if len(counts) == 1 and NOT_RECORDED not in counts:
        return ""
    recorded = sorted(((k, n) for k, n in counts.items() if k != NOT_RECORDED), key=lambda kn: (-kn[1], kn[0]))
    listed = "; ".join(f"{k}: {n}" for k, n in recorded)
    if NOT_RECORDED in counts:
        listed += ("; " if listed else "") + f"{NOT_RECORDED} (written before results recorded it): " \
                                             f"{counts[NOT_RECORDED]}"
    return (f" Numerics, results per environment (CPU, kernel path, BLAS): {listed}. A result reruns bit for bit "
            "only in its own environment; across environments figures move within the numerical noise "
            "(verify --noise), so differences between results of different environments include it.")
