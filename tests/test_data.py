"""torchvision data sets on files the tests write in the official on-disk formats, loaded by the real code path."""

from __future__ import annotations

import hashlib
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import ConfigError, DataConfig, SuiteConfig, build
from benchmark.data.datasets import (
    NORMALIZATION,
    dataset_info,
    default_workers,
    load_dataset,
    make_loader,
)
from benchmark.data.vision import torchvision
from benchmark.errors import DataError
from benchmark.models import Normalized, create_model
from tests.conftest import tiny_suite_dict

ROOT = Path(__file__).resolve().parent.parent
N_PER_BATCH, N_TEST = 4, 6


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path) -> dict[str, np.ndarray]:
    """A cifar-10-batches-py folder with five training batches, a test batch and the metadata file."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        n = N_TEST if name == "test_batch" else N_PER_BATCH
        data = images(n, i)
        labels = [(i + j) % 10 for j in range(n)]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        written[name] = data
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{k}" for k in range(10)]}, f)
    return written


@pytest.fixture
def cifar10_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A CIFAR-10 directory written by the test, with torchvision told the checksums of these files."""
    written = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    cls = torchvision().datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", [[n, md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(folder / "batches.meta")})
    return tmp_path, written


def as_tensor(flat: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(flat.reshape(3, 32, 32).astype(np.float32) / 255.0)


def test_cifar10_loads_with_splits_and_augmentation_only_in_training(cifar10_dir) -> None:
    root, written = cifar10_dir
    data = load_dataset("cifar10", data_dir=str(root), val_fraction=0.25, split_seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (15, 5, N_TEST)
    assert data.num_classes == 10 and data.input_shape == (3, 32, 32)
    raw = np.concatenate([written[f"data_batch_{k}"] for k in range(1, 6)])
    x, y = data.test[0]
    assert torch.equal(x, as_tensor(written["test_batch"][0])) and y == 5
    # validation images are the training images untouched (no augmentation), every time they are read
    for i in range(len(data.val)):
        x, _ = data.val[i]
        assert torch.equal(x, as_tensor(raw[data.val.indices[i]]))
    # training images go through crop + flip: some reads differ from the original, all keep shape and range
    torch.manual_seed(0)
    reads = [data.train[0][0] for _ in range(8)]
    original = as_tensor(raw[data.train.indices[0]])
    assert all(r.shape == (3, 32, 32) and 0 <= r.min() and r.max() <= 1 for r in reads)
    assert any(not torch.equal(r, original) for r in reads)
    plain = load_dataset("cifar10", data_dir=str(root), val_fraction=0.25, augment=False)
    assert torch.equal(plain.train[0][0], original)


def test_cifar10_batches_through_the_loader(cifar10_dir) -> None:
    root, _ = cifar10_dir
    data = load_dataset("cifar10", data_dir=str(root), val_fraction=0.0)
    x, y = next(iter(make_loader(data.train, 8, shuffle=True, seed=0)))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long


def test_missing_directory_is_one_line_naming_the_path_and_the_download_switch(tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))
    text = str(e.value)
    assert "\n" not in text and str(tmp_path / "nowhere" / "cifar-10-batches-py") in text
    assert "dataset.download: true" in text


def test_files_with_other_checksums_are_still_refused(tmp_path: Path) -> None:
    """Without the test's checksums the production loader keeps checking the official ones."""
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="corrupted") as e:
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert "\n" not in str(e.value)


def test_svhn_mat_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 5)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(n, 1)  # SVHN stores the digit 0 as label 10
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
    cls = torchvision().datasets.SVHN
    patched = {k: [v[0], v[1], md5(tmp_path / v[1]) if (tmp_path / v[1]).exists() else v[2]]
               for k, v in cls.split_list.items()}
    monkeypatch.setattr(cls, "split_list", patched)
    data = load_dataset("svhn", data_dir=str(tmp_path), val_fraction=0.25)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 5)
    labels = sorted(int(data.test[i][1]) for i in range(5))
    assert labels == [1, 2, 3, 4, 5] and data.test[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match="test_32x32.mat"):
        (tmp_path / "test_32x32.mat").unlink()
        load_dataset("svhn", data_dir=str(tmp_path))


def write_images(folder: Path, classes: list[str], n: int, size: int = 40) -> None:
    from PIL import Image

    rng = np.random.default_rng(len(classes) + n)
    for c in classes:
        (folder / c).mkdir(parents=True)
        for i in range(n):
            pixels = rng.integers(0, 256, size=(size, size + 6, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / c / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    write_images(tmp_path / "train", ["cat", "dog"], 3)
    write_images(tmp_path / "val", ["cat", "dog"], 2)
    data = load_dataset("imagefolder", data_dir=str(tmp_path), val_fraction=0.5, image_size=32)
    assert data.num_classes == 2 and data.input_shape == (3, 32, 32)
    assert (len(data.train), len(data.val), len(data.test)) == (3, 3, 4)
    assert data.train[0][0].shape == data.val[0][0].shape == data.test[0][0].shape == (3, 32, 32)
    with pytest.raises(DataError, match="one sub-folder of images per class"):
        load_dataset("imagefolder", data_dir=str(tmp_path / "missing"))
    write_images(tmp_path / "other" / "val", ["cat", "bird"], 1)
    (tmp_path / "other" / "train").symlink_to(tmp_path / "train")
    with pytest.raises(DataError, match="differ"):
        load_dataset("imagefolder", data_dir=str(tmp_path / "other"), image_size=32)


def test_normalisation_is_a_layer_of_the_model_with_per_dataset_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("tiny_resnet", 10, 3, width=4, normalize="cifar10").eval()
    assert isinstance(model, Normalized)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in NORMALIZATION["cifar10"])
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(model(x), model.model((x - mean) / std))
    assert not any(k.startswith("normalize.") for k in model.state_dict())  # plain checkpoints still fit
    with pytest.raises(ValueError, match="known"):
        create_model("tiny_resnet", 10, 3, normalize="mnist")
    with pytest.raises(ConfigError, match="normalize"):
        build(SuiteConfig, tiny_suite_dict(normalize=True))  # no statistics for the digits


def test_loader_settings_for_a_gpu() -> None:
    ds = torch.utils.data.TensorDataset(torch.zeros(8, 3, 4, 4), torch.zeros(8, dtype=torch.long))
    assert default_workers("cpu") == 0 and default_workers(None) == 0
    assert 1 <= default_workers("cuda") <= 8
    cpu = make_loader(ds, 4, shuffle=True)
    assert cpu.num_workers == 0 and not cpu.pin_memory
    gpu = make_loader(ds, 4, shuffle=True, device="cuda", num_workers=2)
    assert gpu.pin_memory and gpu.num_workers == 2 and gpu.persistent_workers
    with pytest.raises(ConfigError, match="num_workers"):
        build(DataConfig, {"name": "digits", "num_workers": -1})


def test_sizes_are_known_without_reading_files() -> None:
    assert dataset_info("cifar10").n_train == 50_000 and dataset_info("svhn").n_test == 26_032
    assert dataset_info("synthetic", {"n_train": 64, "shape": [3, 16, 16]}).input_shape == (3, 16, 16)
    assert dataset_info("imagefolder", {"image_size": 64}).n_train is None


def test_only_the_vision_module_imports_torchvision() -> None:
    pattern = re.compile(r"^\s*(import torchvision|from torchvision\b)", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for folder in ("benchmark", "baselines", "s2ap", "tests")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == ["benchmark/data/vision.py"]
