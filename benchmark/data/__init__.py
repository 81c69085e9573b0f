"""Data sets (registry, loaders, train/validation/test splits) and the torchvision import fix."""

from benchmark.data.datasets import (
    DATASETS,
    IDX_FILES,
    NORMALIZATION,
    DatasetInfo,
    DataSplits,
    dataset_info,
    first_n,
    idx_layout,
    load_dataset,
    loader_settings,
    make_loader,
    n_validation,
    register_dataset,
)

__all__ = [
    "DATASETS", "DataSplits", "DatasetInfo", "IDX_FILES", "NORMALIZATION", "dataset_info", "first_n",
    "idx_layout", "load_dataset", "loader_settings", "make_loader", "n_validation", "register_dataset",
]
