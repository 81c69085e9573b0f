"""Data sets by name: the 8x8 digits shipped inside scikit-learn (the offline default) and synthetic images.

Every loader returns a :class:`DataSplits` with train / validation / test splits of images in [0, 1];
normalisation, if any, belongs inside the model so attacks see [0, 1] inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from baselines.registry import Registry
from benchmark.errors import DataError

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")


@dataclass
class DataSplits:
    """Train / validation / test splits; the test split is used by evaluation only."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]


def register_dataset(name: str) -> Callable:
    return DATASETS.register(name)


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    download: bool = False,
    val_fraction: float = 0.15,
    split_seed: int = 0,
    **options,
) -> DataSplits:
    """Load a registered data set and split a validation set off its training set with a fixed seed."""
    loader = DATASETS.get(name)
    try:
        return loader(
            data_dir=data_dir, download=download, val_fraction=val_fraction, split_seed=split_seed, **options
        )
    except TypeError as e:
        raise DataError(f"data set {name!r}: bad option ({e}); check 'dataset.options' in the suite") from None


def split_off_validation(train: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    n = len(train)  # type: ignore[arg-type]
    n_val = int(round(val_fraction * n))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(train, perm[n_val:]), Subset(train, perm[:n_val])


@register_dataset("digits")
def load_digits(
    *, data_dir: str | None, download: bool, val_fraction: float, split_seed: int, test_fraction: float = 0.25
) -> DataSplits:
    """scikit-learn's 8x8 handwritten digits (1797 images, inside the package: no download), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    rng = np.random.default_rng(split_seed)
    perm = torch.tensor(rng.permutation(len(y)))
    n_test = int(round(test_fraction * len(y)))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    train = TensorDataset(x[train_idx], y[train_idx])
    train, val = split_off_validation(train, val_fraction, split_seed)
    return DataSplits(train, val, TensorDataset(x[test_idx], y[test_idx]), 10, (1, 8, 8))


@register_dataset("synthetic")
def load_synthetic(
    *,
    data_dir: str | None,
    download: bool,
    val_fraction: float,
    split_seed: int,
    n_train: int = 2000,
    n_test: int = 500,
    num_classes: int = 10,
    shape: tuple[int, int, int] | list[int] = (3, 32, 32),
    noise: float = 0.25,
) -> DataSplits:
    """Class prototypes plus Gaussian noise, clipped to [0, 1]; deterministic for a seed. For speed tests."""
    shape = tuple(int(s) for s in shape)
    gen = torch.Generator().manual_seed(split_seed)
    protos = torch.rand((num_classes, *shape), generator=gen)

    def sample(n: int) -> TensorDataset:
        y = torch.randint(0, num_classes, (n,), generator=gen)
        x = (protos[y] + noise * torch.randn((n, *shape), generator=gen)).clamp(0, 1)
        return TensorDataset(x, y)

    train, val = split_off_validation(sample(n_train), val_fraction, split_seed)
    return DataSplits(train, val, sample(n_test), num_classes, shape)  # type: ignore[arg-type]


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader with its own seeded generator (shuffling does not touch the global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=False)


def first_n(dataset: Dataset, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples (all if fewer) as two tensors: the fixed evaluation points."""
    n = min(n, len(dataset))  # type: ignore[arg-type]
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack(xs), torch.as_tensor(ys)
