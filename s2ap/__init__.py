"""S2AP: score-space sharpness-aware adversarial pruning, a plug-in for every score-based pruner."""

from s2ap.build import PLUGIN_SUFFIX, build_pruner, check_method, list_methods, split_method
from s2ap.metrics import mask_distance, score_sharpness
from s2ap.plugin import S2AP, S2APSettings

__all__ = [
    "PLUGIN_SUFFIX",
    "S2AP",
    "S2APSettings",
    "build_pruner",
    "check_method",
    "list_methods",
    "mask_distance",
    "score_sharpness",
    "split_method",
]
