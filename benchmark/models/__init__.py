"""Models: the registry (``register_model`` / ``create_model``), small CPU-sized models, full-size 32x32
architectures, RobustBench zoo architectures, state-dict fitting and pruned-model files."""

from benchmark.models import architectures, small  # noqa: F401  (registers the models)
from benchmark.models.registry import MODELS, Normalize, Normalized, create_model, list_models, register_model

__all__ = ["MODELS", "Normalize", "Normalized", "create_model", "list_models", "register_model"]
