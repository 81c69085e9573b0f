"""Data sets by name: the 8x8 digits shipped inside scikit-learn (the offline default), synthetic images, and
through torchvision Fashion-MNIST, MNIST, CIFAR-10, CIFAR-100, SVHN and any ImageNet-style folder of images.

Every loader returns a :class:`DataSplits` with train / validation / test splits of images in [0, 1];
normalisation, if any, belongs inside the model (``SuiteConfig.normalize``, statistics in
:data:`NORMALIZATION`) so attacks see [0, 1] inputs. Training images are augmented; the validation split is
cut from the training set but read with the evaluation transform (no augmentation).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from baselines.registry import Registry
from benchmark.errors import ConfigError, DataError

DATASETS: Registry[Callable[..., DataSplits]] = Registry("dataset")

# Per-channel mean and std of each data set's training images (the one place these numbers live). Used only by
# the model's Normalize layer when a suite sets ``normalize: true``; "imagefolder" gets ImageNet's statistics.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


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


MIN_TRAIN = 2  # a BatchNorm layer cannot train on a single example


def n_validation(n: int, val_fraction: float) -> int:
    """Items the validation split takes from ``n`` training items (the rest are the training split)."""
    return int(round(val_fraction * n))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices of a seeded random split of ``n`` items."""
    n_val = n_validation(n, val_fraction)
    if n - n_val < MIN_TRAIN:
        raise ConfigError(f"config field 'dataset.val_fraction': got {val_fraction}, which leaves {n - n_val} of {n} "
                          f"training examples (at least {MIN_TRAIN} are needed); lower it, e.g. 0.15")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[n_val:], perm[:n_val]


def split_off_validation(train: Dataset, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    train_idx, val_idx = split_indices(len(train), val_fraction, seed)  # type: ignore[arg-type]
    return Subset(train, train_idx), Subset(train, val_idx)


class TransformedSubset(Dataset):
    """Items ``indices`` of ``base`` (which yields raw images) with ``transform`` applied to the image."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable) -> None:
        self.base, self.indices, self.transform = base, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        image, label = self.base[self.indices[i]]
        return self.transform(image), int(label)


def split_with_transforms(base: Dataset, val_fraction: float, seed: int, train_transform: Callable,
                          eval_transform: Callable) -> tuple[Dataset, Dataset]:
    """Train / validation splits of one raw data set: augmentation for training, none for validation."""
    train_idx, val_idx = split_indices(len(base), val_fraction, seed)  # type: ignore[arg-type]
    return TransformedSubset(base, train_idx, train_transform), TransformedSubset(base, val_idx, eval_transform)


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


# -- torchvision data sets -----------------------------------------------------------------------------------
def data_root(name: str, data_dir: str | None) -> Path:
    """Where a data set's files are: ``dataset.data_dir``, or ``data/<name>`` under the working directory."""
    return Path(data_dir) if data_dir else Path("data") / name


def _not_found(name: str, expected: Path, what: str, can_download: bool = True) -> DataError:
    fix = " or set dataset.download: true" if can_download else ""
    return DataError(f"data set {name!r} not found: expected {what} at {expected}; put the files there "
                     f"(or point dataset.data_dir at them){fix}")


def _open(name: str, root: Path, make: Callable[[], Dataset]) -> Dataset:
    """Instantiate a torchvision data set, turning its errors (corrupt files, failed download) into one line."""
    try:
        return make()
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"data set {name!r} under {root}: {first}; replace the files with the official ones "
                        "(or delete them and set dataset.download: true)") from None
    except OSError as e:  # a download that could not reach the server, an unreadable file
        raise DataError(f"data set {name!r} under {root}: {type(e).__name__}: {e}; download the files on a "
                        "machine with internet access and copy them there") from None


def _cifar(name: str, class_name: str, folder: str, num_classes: int, *, data_dir: str | None, download: bool,
           val_fraction: float, split_seed: int, augment: bool) -> DataSplits:
    from benchmark.data.vision import torchvision

    tv = torchvision()
    root = data_root(name, data_dir)
    if not download and not (root / folder).is_dir():
        raise _not_found(name, root / folder, f"the extracted python version of the archive ({folder}/)")
    cls = getattr(tv.datasets, class_name)
    T = tv.transforms
    raw_train = _open(name, root, lambda: cls(str(root), train=True, download=download))
    test = _open(name, root, lambda: cls(str(root), train=False, download=download, transform=T.ToTensor()))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor()]) if augment \
        else T.ToTensor()
    train, val = split_with_transforms(raw_train, val_fraction, split_seed, train_tf, T.ToTensor())
    return DataSplits(train, val, test, num_classes, (3, 32, 32))


@register_dataset("cifar10")
def load_cifar10(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
                 augment: bool = True) -> DataSplits:
    """CIFAR-10 (50,000 training, 10,000 test images); training: random crop (padding 4) + horizontal flip."""
    return _cifar("cifar10", "CIFAR10", "cifar-10-batches-py", 10, data_dir=data_dir, download=download,
                  val_fraction=val_fraction, split_seed=split_seed, augment=augment)


@register_dataset("cifar100")
def load_cifar100(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
                  augment: bool = True) -> DataSplits:
    """CIFAR-100 (fine labels); the same augmentation as CIFAR-10."""
    return _cifar("cifar100", "CIFAR100", "cifar-100-python", 100, data_dir=data_dir, download=download,
                  val_fraction=val_fraction, split_seed=split_seed, augment=augment)


@register_dataset("svhn")
def load_svhn(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
              augment: bool = True) -> DataSplits:
    """SVHN cropped digits (73,257 training, 26,032 test; "extra" unused); training: random crop only (a
    flip would turn digits into other shapes)."""
    from benchmark.data.vision import torchvision

    tv = torchvision()
    T = tv.transforms
    root = data_root("svhn", data_dir)
    for split in ("train", "test"):
        if not download and not (root / f"{split}_32x32.mat").is_file():
            raise _not_found("svhn", root / f"{split}_32x32.mat", "the official .mat file")
    raw_train = _open("svhn", root, lambda: tv.datasets.SVHN(str(root), split="train", download=download))
    test = _open("svhn", root, lambda: tv.datasets.SVHN(str(root), split="test", download=download,
                                                        transform=T.ToTensor()))
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.ToTensor()]) if augment else T.ToTensor()
    train, val = split_with_transforms(raw_train, val_fraction, split_seed, train_tf, T.ToTensor())
    return DataSplits(train, val, test, 10, (3, 32, 32))


@register_dataset("imagefolder")
def load_imagefolder(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
                     image_size: int = 224, train_dir: str = "train", test_dir: str = "val",
                     crop_fraction: float = 0.875, augment: bool = True) -> DataSplits:
    """An ImageNet-style folder: ``<data_dir>/<train_dir>/<class>/*.jpg`` and ``<data_dir>/<test_dir>/<class>/``.

    Training: random resized crop to ``image_size`` + horizontal flip; evaluation: resize to
    ``image_size / crop_fraction`` and centre crop. Nothing is downloaded.
    """
    from benchmark.data.vision import torchvision

    tv = torchvision()
    T = tv.transforms
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"data set 'imagefolder': image_size {image_size!r} must be an integer >= 8")
    if not 0 < crop_fraction <= 1:
        raise DataError(f"data set 'imagefolder': crop_fraction {crop_fraction!r} must be in (0, 1]")
    root = data_root("imagefolder", data_dir)
    for sub in (train_dir, test_dir):
        if not (root / sub).is_dir():
            raise _not_found("imagefolder", root / sub, "one sub-folder of images per class", can_download=False)
    eval_tf = T.Compose([T.Resize(int(round(image_size / crop_fraction))), T.CenterCrop(image_size),
                         T.ToTensor()])
    train_tf = T.Compose([T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), T.ToTensor()]) if augment \
        else eval_tf
    raw_train = _open("imagefolder", root, lambda: tv.datasets.ImageFolder(str(root / train_dir)))
    test = _open("imagefolder", root, lambda: tv.datasets.ImageFolder(str(root / test_dir), transform=eval_tf))
    if raw_train.classes != test.classes:  # type: ignore[attr-defined]
        raise DataError(f"data set 'imagefolder': the class folders of {root / train_dir} and {root / test_dir} "
                        "differ; both need the same class sub-folders")
    train, val = split_with_transforms(raw_train, val_fraction, split_seed, train_tf, eval_tf)
    return DataSplits(train, val, test, len(raw_train.classes), (3, image_size, image_size))  # type: ignore


# -- Fashion-MNIST and MNIST: the four idx files, gzipped or not ----------------------------------------------
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_SOURCES = {  # data set -> (torchvision class, how to get the files)
    "fashion_mnist": ("FashionMNIST", "install them with `apt-get install -y dataset-fashion-mnist` "
                                      "(/usr/share/datasets/fashion-mnist) or set dataset.download: true"),
    "mnist": ("MNIST", "copy the four files of http://yann.lecun.com/exdb/mnist/ there or set dataset.download: "
                       "true"),
}


def cache_root() -> Path:
    """Where derived data files go: ``$S2AP_BENCH_CACHE``, else ``$XDG_CACHE_HOME/s2ap-bench``, else
    ``~/.cache/s2ap-bench``."""
    if os.environ.get("S2AP_BENCH_CACHE"):
        return Path(os.environ["S2AP_BENCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "s2ap-bench"


def _find_idx(folder: Path, base: str) -> Path | None:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def idx_layout(name: str, source: Path) -> Path:
    """A root folder in torchvision's layout (``<root>/<Class>/raw/<idx file>``, uncompressed) for the four idx
    files in ``source``: ``source`` itself when it already has that layout; otherwise a folder under
    :func:`cache_root` keyed by ``source``'s path, where uncompressed files are symlinked and gzipped ones
    decompressed once (atomically, so parallel workers may race)."""
    cls_name, fix = IDX_SOURCES[name]
    if all((source / cls_name / "raw" / base).is_file() for base in IDX_FILES):
        return source
    found = {base: _find_idx(source, base) for base in IDX_FILES}
    missing = [base for base, path in found.items() if path is None]
    if missing:
        what = "no idx files" if len(missing) == len(IDX_FILES) else f"no {', '.join(missing)} (.gz or not)"
        raise DataError(f"data set {name!r}: {source} has {what}; {fix}, and point dataset.data_dir at the folder")
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    root = cache_root() / f"{name}-{key}"
    raw = root / cls_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for base, path in found.items():
        target = raw / base
        assert path is not None
        if path.suffix != ".gz":
            if not (target.is_symlink() and target.resolve() == path.resolve()):
                tmp = raw / f".{base}.{os.getpid()}.link"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(path.resolve())
                os.replace(tmp, target)
        elif not target.is_file() or target.is_symlink() or target.stat().st_mtime < path.stat().st_mtime:
            tmp = raw / f".{base}.{os.getpid()}.tmp"
            try:
                with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except (OSError, EOFError) as e:
                tmp.unlink(missing_ok=True)
                raise DataError(f"data set {name!r}: {path} is not a readable gzip file ({e}); {fix}") from None
            os.replace(tmp, target)
    return root


class IdxImages(Dataset):
    """28x28 grey images kept as uint8 (``N x 28 x 28``) and returned as ``1 x 28 x 28`` floats in [0, 1]: the
    values of torchvision's ``ToTensor`` at a quarter of the memory."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i].unsqueeze(0).float().div(255), int(self.labels[i])


def _idx(name: str, *, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
         n_train: int | None) -> DataSplits:
    from benchmark.data.vision import torchvision

    cls_name, _ = IDX_SOURCES[name]
    source = data_root(name, data_dir)
    root = source if download else idx_layout(name, source)
    cls = getattr(torchvision().datasets, cls_name)
    try:
        train = _open(name, root, lambda: cls(str(root), train=True, download=download))
        test = _open(name, root, lambda: cls(str(root), train=False, download=download))
    except (AssertionError, ValueError, IndexError) as e:  # torchvision's idx parser asserts on a bad header
        raise DataError(f"data set {name!r}: the idx files of {source} are not valid idx files ({type(e).__name__}"
                        f"{': ' + str(e) if str(e) else ''}); {IDX_SOURCES[name][1]}") from None
    keep = torch.arange(len(train.targets))
    if n_train is not None:
        if isinstance(n_train, bool) or not isinstance(n_train, int) or not 0 < n_train <= len(keep):
            raise DataError(f"data set {name!r}: n_train {n_train!r} must be an integer in 1..{len(keep)}")
        keep = torch.randperm(len(keep), generator=torch.Generator().manual_seed(split_seed))[:n_train]
    full = IdxImages(train.data[keep], train.targets[keep])
    train_split, val_split = split_off_validation(full, val_fraction, split_seed)
    return DataSplits(train_split, val_split, IdxImages(test.data, test.targets), 10, (1, 28, 28))


@register_dataset("fashion_mnist")
def load_fashion_mnist(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
                       n_train: int | None = None) -> DataSplits:
    """Fashion-MNIST (60,000 training, 10,000 test images, 28x28 grey, 10 classes), read by torchvision's
    ``FashionMNIST`` from the four idx files in ``data_dir`` (gzipped or not, e.g. Debian's
    /usr/share/datasets/fashion-mnist). ``n_train``: a seeded random subset of the training images, taken before
    the validation split. No augmentation."""
    return _idx("fashion_mnist", data_dir=data_dir, download=download, val_fraction=val_fraction,
                split_seed=split_seed, n_train=n_train)


@register_dataset("mnist")
def load_mnist(*, data_dir: str | None, download: bool, val_fraction: float, split_seed: int,
               n_train: int | None = None) -> DataSplits:
    """MNIST, the same format and options as :func:`load_fashion_mnist` (torchvision's ``MNIST``)."""
    return _idx("mnist", data_dir=data_dir, download=download, val_fraction=val_fraction, split_seed=split_seed,
                n_train=n_train)


# -- sizes known without reading any file (dry-run cost estimates) ---------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a data set before loading it; ``None`` where only loading would tell."""

    n_train: int | None  # the whole training set, before the validation split
    n_test: int | None
    input_shape: tuple[int, int, int] | None
    num_classes: int | None


def _digits_info(o: dict) -> DatasetInfo:
    n_test = int(round(o.get("test_fraction", 0.25) * 1797))
    return DatasetInfo(1797 - n_test, n_test, (1, 8, 8), 10)


def _synthetic_info(o: dict) -> DatasetInfo:
    shape = tuple(int(v) for v in o.get("shape", (3, 32, 32)))
    return DatasetInfo(int(o.get("n_train", 2000)), int(o.get("n_test", 500)), shape,  # type: ignore[arg-type]
                       int(o.get("num_classes", 10)))


_INFO: dict[str, Callable[[dict], DatasetInfo]] = {
    "digits": _digits_info,
    "synthetic": _synthetic_info,
    "cifar10": lambda o: DatasetInfo(50_000, 10_000, (3, 32, 32), 10),
    "cifar100": lambda o: DatasetInfo(50_000, 10_000, (3, 32, 32), 100),
    "svhn": lambda o: DatasetInfo(73_257, 26_032, (3, 32, 32), 10),
    "fashion_mnist": lambda o: DatasetInfo(int(o.get("n_train") or 60_000), 10_000, (1, 28, 28), 10),
    "mnist": lambda o: DatasetInfo(int(o.get("n_train") or 60_000), 10_000, (1, 28, 28), 10),
    "imagefolder": lambda o: DatasetInfo(None, None, (3, int(o.get("image_size", 224)),
                                                      int(o.get("image_size", 224))), None),
}


def dataset_info(name: str, options: dict[str, Any] | None = None) -> DatasetInfo:
    """Sizes and shapes of a registered data set from its name and options alone (no file is read)."""
    describe = _INFO.get(name)
    if describe is None:
        return DatasetInfo(None, None, None, None)
    return describe(dict(options or {}))


# -- loaders -----------------------------------------------------------------------------------------------------
def default_workers(device: torch.device | str | None) -> int:
    """Loader worker processes when ``dataset.num_workers`` is not set: none on CPU (the training step needs
    every core), up to 8 on CUDA so image decoding and augmentation keep the GPU busy."""
    if device is None or torch.device(device).type != "cuda":
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                device: torch.device | str | None = None, num_workers: int | None = None) -> DataLoader:
    """A DataLoader with its own seeded generator (shuffling does not touch the global RNG).

    For a CUDA ``device`` batches are pinned (fast, asynchronous copies); ``num_workers`` processes (default:
    :func:`default_workers`) prepare batches in parallel and stay alive between epochs.
    """
    gen = torch.Generator().manual_seed(seed)
    workers = default_workers(device) if num_workers is None else num_workers
    cuda = device is not None and torch.device(device).type == "cuda"
    extra: dict[str, Any] = {"num_workers": workers, "pin_memory": cuda}
    if workers > 0:
        extra.update(persistent_workers=True, prefetch_factor=4)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=False, **extra)


def loader_settings(data_cfg: Any, device: torch.device | str | None) -> dict[str, Any]:
    """The keyword arguments of :func:`make_loader` that a suite's data config and device decide."""
    return {"device": device, "num_workers": getattr(data_cfg, "num_workers", None)}


def first_n(dataset: Dataset, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` examples (all if fewer) as two tensors: the fixed evaluation points."""
    n = min(n, len(dataset))  # type: ignore[arg-type]
    xs, ys = zip(*(dataset[i] for i in range(n)))
    return torch.stack(xs), torch.as_tensor(ys)
