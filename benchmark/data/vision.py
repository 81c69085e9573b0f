"""The one place that imports torchvision. Everything else calls :func:`torchvision` and uses what it returns.

The published torchvision 0.28.0 wheel is a CUDA build. Next to the CPU build of torch its compiled operators
do not load, and importing it stops with ``RuntimeError: operator torchvision::nms does not exist`` (its
Python code registers fake kernels for operators that were never defined). Defining the schemas of the two
operators it looks up first (``nms``, ``qnms``) in a ``torch.library.Library`` makes the import succeed;
models, transforms and data sets work, ``torchvision.ops.nms`` itself stays unusable (this project never
calls it). Where the compiled operators do load (GPU machines) nothing is defined and torchvision is used as is.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType

import torch

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor",
)
_lock = threading.Lock()
# Kept alive for the life of the process: a garbage-collected Library removes what it defined.
_library: torch.library.Library | None = None


def _forget_partial_import() -> None:
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def _define_missing_operators() -> None:
    global _library
    if _library is None:
        _library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            _library.define(schema)


def torchvision() -> ModuleType:
    """Import torchvision safely and return it (defining its operator schemas first where torch lacks them)."""
    with _lock:
        module = sys.modules.get("torchvision")
        if module is not None and hasattr(module, "datasets"):
            return module
        try:
            import torchvision as tv
        except RuntimeError as e:
            if "torchvision::" not in str(e):
                raise
            _forget_partial_import()
            _define_missing_operators()
            import torchvision as tv
        import torchvision.datasets  # noqa: F401  (sub-packages used through the returned module)
        import torchvision.models  # noqa: F401
        import torchvision.transforms  # noqa: F401

        return tv
