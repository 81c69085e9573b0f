"""Fashion-MNIST read by torchvision from Debian's real files (``apt-get install -y dataset-fashion-mnist``,
installed by .ci/run), the idx-folder bridge, and the fmnist suites."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from benchmark.config import load_suite
from benchmark.data.datasets import IDX_FILES, dataset_info, idx_layout, load_dataset
from benchmark.errors import DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
needs_files = pytest.mark.skipif(not (DEBIAN / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"{DEBIAN} missing: apt-get install -y dataset-fashion-mnist")
# sha256 of the uint8 pixels of the first image of each split, and its label (9: ankle boot)
FIRST_TRAIN = "5bd44e331a6d6998daf675700cd0c13dcd7af8ab954b7585124124da61459e7b"
FIRST_TEST = "ffc7351ed0f8bae542820866086177fa4e0b366b97bf9d998dffdb8dbe138787"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _cache_env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S2AP_BENCH_CACHE", str(cache))


def pixels_sha(x: torch.Tensor) -> str:
    return hashlib.sha256((x * 255).round().to(torch.uint8).numpy().tobytes()).hexdigest()


@needs_files
def test_real_files_shapes_label_counts_and_first_images() -> None:
    data = load_dataset("fashion_mnist", data_dir=str(DEBIAN), val_fraction=0.0)
    assert (len(data.train), len(data.val), len(data.test)) == (60_000, 0, 10_000)
    assert data.num_classes == 10 and data.input_shape == (1, 28, 28)
    full = data.train.dataset  # the training images in file order (the split is a Subset)
    x, y = full[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert pixels_sha(x) == FIRST_TRAIN and y == 9
    x, y = data.test[0]
    assert pixels_sha(x) == FIRST_TEST and y == 9
    assert torch.bincount(full.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(data.test.labels, minlength=10).tolist() == [1000] * 10


@needs_files
def test_gzipped_files_are_decompressed_once_into_the_cache(cache: Path) -> None:
    root = idx_layout("fashion_mnist", DEBIAN)
    assert root.is_relative_to(cache)
    raw = root / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(IDX_FILES)
    stamp = (raw / "train-images-idx3-ubyte").stat().st_mtime_ns
    assert idx_layout("fashion_mnist", DEBIAN) == root
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == stamp  # not written again


@needs_files
def test_uncompressed_files_are_linked_not_copied(tmp_path: Path) -> None:
    for base in IDX_FILES:
        with gzip.open(DEBIAN / f"{base}.gz") as src, open(tmp_path / base, "wb") as dst:
            shutil.copyfileobj(src, dst)
    raw = idx_layout("fashion_mnist", tmp_path) / "FashionMNIST" / "raw"
    assert all((raw / b).is_symlink() and (raw / b).resolve() == (tmp_path / b).resolve() for b in IDX_FILES)
    data = load_dataset("fashion_mnist", data_dir=str(tmp_path), val_fraction=0.1, n_train=500)
    assert (len(data.train), len(data.val)) == (450, 50)
    assert pixels_sha(data.test[0][0]) == FIRST_TEST


def test_missing_folder_is_one_line_with_the_path_and_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "nowhere"))
    text = str(e.value)
    assert "\n" not in text and str(tmp_path / "nowhere") in text
    assert "apt-get install -y dataset-fashion-mnist" in text


def test_partial_folder_names_the_missing_files(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    text = str(e.value)
    assert "\n" not in text and str(tmp_path) in text and "apt-get install -y dataset-fashion-mnist" in text
    assert "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte" in text and "train-images" not in text


def test_corrupt_files_are_one_line(tmp_path: Path) -> None:
    for base in IDX_FILES:
        (tmp_path / f"{base}.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="not a readable gzip file") as e:
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)
    for base in IDX_FILES:  # valid gzip, not idx inside
        (tmp_path / f"{base}.gz").write_bytes(gzip.compress(b"\x00" * 64))
    with pytest.raises(DataError, match="not valid idx files") as e:
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)


def test_fmnist_suites_load_and_know_their_sizes() -> None:
    full, quick = load_suite("fmnist"), load_suite("fmnist-quick")
    assert full.dataset.name == quick.dataset.name == "fashion_mnist"
    assert full.threat.eps == "1/10" and len(full.cells()) == 117 and full.seeds == (0, 1, 2)
    structured = load_suite("fmnist-structured")  # the structured grid on the same protocol and dense models
    assert structured.granularity == "channel" and structured.sparsities == (0.5, 0.75, 0.9)
    assert [m.label for m in structured.methods] == ["hydra", "hydra+s2ap", "harp", "harp+s2ap", "twinrep", "radmm"]
    assert structured.dense_identity(0) == full.dense_identity(0) and len(structured.cells()) == 54
    info = dataset_info("fashion_mnist", full.dataset.options)
    assert info.input_shape == (1, 28, 28) and info.n_test == 10_000
    assert info.n_train == full.dataset.options.get("n_train", 60_000)
    assert full.evaluation.n_examples <= info.n_test and len(quick.cells()) < len(full.cells())
