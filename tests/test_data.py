"""Tests for combonet.data: file parsing, validation, splits, normalisation, permutations."""

from __future__ import annotations

import gzip
import json
import os
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from combonet.data import (
    TASKS,
    DataError,
    DataSplits,
    SequenceDataset,
    check_permutation,
    load_task,
    make_loader,
    make_permutation,
    read_cifar_batch,
    read_idx_images,
    read_idx_labels,
)
from data_files import (
    MNIST_NAMES,
    write_cifar_batch,
    write_fake_cifar,
    write_fake_mnist,
    write_gzip_bomb,
    write_idx_images,
    write_idx_labels,
)

MNIST_STEPS = 784


def _norm_mnist(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float64) / 255.0) - 0.1307) / 0.3081


def _quiet(fn, *args, **kwargs):
    """Call ``fn`` with the expected 'fewer CIFAR batches' warning silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    arrays = write_fake_mnist(tmp_path / "mnist", n_train=40, n_test=15, gz=True, seed=1)
    return tmp_path / "mnist", arrays


@pytest.fixture
def cifar_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "cifar-10-batches-bin"
    arrays = write_fake_cifar(folder, per_batch=12, n_batches=2, n_test=7, seed=2)
    return folder, arrays


# -- IDX parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip_raw_and_gz(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    pi = write_idx_images(tmp_path / f"imgs{suffix}", images)
    pl = write_idx_labels(tmp_path / f"lbls{suffix}", labels)
    if suffix:
        assert pi.read_bytes()[:2] == b"\x1f\x8b"  # really gzip-compressed
    np.testing.assert_array_equal(read_idx_images(pi), images)
    np.testing.assert_array_equal(read_idx_labels(pl), labels)


@pytest.mark.parametrize("gz", [True, False])
def test_smnist_shapes_values_and_label_order(tmp_path: Path, gz: bool) -> None:
    arrays = write_fake_mnist(tmp_path, n_train=30, n_test=12, gz=gz, seed=3)
    s = load_task("smnist", tmp_path, val_fraction=0.0)
    assert isinstance(s, DataSplits)
    assert s.train.inputs.shape == (30, MNIST_STEPS, 1)
    assert s.test.inputs.shape == (12, MNIST_STEPS, 1)
    assert s.val.inputs.shape == (0, MNIST_STEPS, 1)
    assert s.train.inputs.dtype == torch.float32 and s.train.labels.dtype == torch.int64
    assert (s.steps, s.features, s.num_classes) == (784, 1, 10)
    # val_fraction=0 and no limit: file order is preserved exactly.
    np.testing.assert_array_equal(s.train.labels.numpy(), arrays["train_y"])
    np.testing.assert_array_equal(s.test.labels.numpy(), arrays["test_y"])
    # Row-major pixel order and the fixed MNIST normalisation (x/255 - 0.1307) / 0.3081.
    expected = _norm_mnist(arrays["train_x"].reshape(30, 784))
    np.testing.assert_allclose(s.train.inputs[:, :, 0].numpy(), expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        s.test.inputs[:, :, 0].numpy(), _norm_mnist(arrays["test_x"].reshape(12, 784)), atol=1e-5
    )
    assert s.meta["norm_mean"] == [0.1307] and s.meta["norm_std"] == [0.3081]


def test_mnist_normalisation_formula_on_known_pixels(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 0, 0] = 255
    images[0, 0, 1] = 51
    images[1, 27, 27] = 128
    for split in ("train", "test"):
        write_idx_images(tmp_path / MNIST_NAMES[f"{split}_images"], images)
        write_idx_labels(tmp_path / MNIST_NAMES[f"{split}_labels"], [7, 2])
    s = load_task("smnist", tmp_path, val_fraction=0.0)
    x = s.train.inputs[:, :, 0].numpy()
    assert x[0, 0] == pytest.approx((1.0 - 0.1307) / 0.3081, abs=1e-6)
    assert x[0, 1] == pytest.approx((0.2 - 0.1307) / 0.3081, abs=1e-6)
    assert x[0, 2] == pytest.approx(-0.1307 / 0.3081, abs=1e-6)
    assert x[1, 783] == pytest.approx((128 / 255 - 0.1307) / 0.3081, abs=1e-6)
    assert s.train.labels.tolist() == [7, 2]


def test_mnist_data_dir_may_be_parent(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path / "mnist", n_train=10, n_test=5)
    assert len(load_task("smnist", tmp_path, val_fraction=0.0).train) == 10


def test_mnist_prefers_raw_file_over_gz(tmp_path: Path) -> None:
    write_fake_mnist(tmp_path, n_train=10, n_test=5, gz=True)
    # A raw train-images file with different content next to the .gz one wins.
    write_idx_images(tmp_path / MNIST_NAMES["train_images"], np.full((10, 28, 28), 255))
    s = load_task("smnist", tmp_path, val_fraction=0.0)
    assert torch.allclose(s.train.inputs, torch.tensor((1.0 - 0.1307) / 0.3081))


# -- permutations --------------------------------------------------------------------------


def test_psmnist_permutation_round_trip(mnist_dir) -> None:
    folder, _ = mnist_dir
    plain = load_task("smnist", folder, seed=5)
    a = load_task("psmnist", folder, seed=5, permutation_seed=3)
    perm = a.meta["permutation"]
    assert sorted(perm) == list(range(MNIST_STEPS)) and perm != list(range(MNIST_STEPS))
    assert a.meta["permutation_seed"] == 3 and a.meta["permuted"] is True
    assert perm == make_permutation(MNIST_STEPS, 3)
    # Round trip through JSON, passed back explicitly (different permutation_seed ignored).
    meta = json.loads(json.dumps(a.meta))
    b = load_task("psmnist", folder, seed=5, permutation_seed=99, permutation=meta["permutation"])
    assert b.meta["permutation"] == perm
    for split in ("train", "val", "test"):
        pa, pb, pp = getattr(a, split), getattr(b, split), getattr(plain, split)
        assert torch.equal(pa.inputs, pb.inputs) and torch.equal(pa.labels, pb.labels)
        # The same permutation is applied to every split: x_perm[:, t] = x[:, perm[t]].
        assert torch.equal(pa.inputs, pp.inputs[:, perm, :])
        assert torch.equal(pa.labels, pp.labels)
    c = load_task("psmnist", folder, seed=5, permutation_seed=4)
    assert c.meta["permutation"] != perm


def test_unpermuted_meta_has_no_permutation(mnist_dir) -> None:
    s = load_task("smnist", mnist_dir[0])
    assert s.meta["permutation"] is None and s.meta["permuted"] is False


@pytest.mark.parametrize(
    "bad",
    [list(range(783)), [0, *range(783)], [*range(783), 784], [float(i) for i in range(784)]],
)
def test_invalid_permutation_rejected(mnist_dir, bad) -> None:
    with pytest.raises(ValueError, match="permutation"):
        load_task("psmnist", mnist_dir[0], permutation=bad)


def test_permutation_rejected_for_unpermuted_task(mnist_dir) -> None:
    with pytest.raises(ValueError, match="not permuted"):
        load_task("smnist", mnist_dir[0], permutation=list(range(784)))


def test_check_permutation_accepts_numpy() -> None:
    perm = np.array([2, 0, 1])
    np.testing.assert_array_equal(check_permutation(perm, 3), perm)
    with pytest.raises(ValueError, match=r"range\(3\)"):
        check_permutation([0, 0, 1], 3)


# -- validation split and limits -------------------------------------------------------------


def test_val_split_disjoint_sizes_and_seeded(mnist_dir) -> None:
    folder, arrays = mnist_dir
    s = load_task("smnist", folder, val_fraction=0.25, seed=7)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 15)
    assert s.meta["sizes"] == {"train": 30, "val": 10, "test": 15}
    # Identify rows by their raw pixels: train and val partition the training file.
    raw = _norm_mnist(arrays["train_x"].reshape(40, 784)).astype(np.float32)

    def rows(ds: SequenceDataset) -> set[int]:
        x = ds.inputs[:, :, 0].numpy()
        d = np.abs(x[:, None, :] - raw[None, :, :]).max(-1)
        idx = d.argmin(1)
        assert np.all(d[np.arange(len(idx)), idx] < 1e-5)
        return set(idx.tolist())

    tr, va = rows(s.train), rows(s.val)
    assert tr.isdisjoint(va) and tr | va == set(range(40))
    np.testing.assert_array_equal(s.val.labels.numpy(), arrays["train_y"][sorted(va)])
    again = load_task("smnist", folder, val_fraction=0.25, seed=7)
    assert torch.equal(again.val.inputs, s.val.inputs)
    other = load_task("smnist", folder, val_fraction=0.25, seed=8)
    assert rows(other.val) != va
    # The test set is never touched by the split.
    assert torch.equal(s.test.labels, torch.as_tensor(arrays["test_y"], dtype=torch.int64))


def test_limits_take_seeded_subsets(mnist_dir) -> None:
    folder, _ = mnist_dir
    full = load_task("smnist", folder, val_fraction=0.0)
    s = load_task("smnist", folder, val_fraction=0.1, limit_train=20, limit_test=5, seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (18, 2, 5)
    assert s.meta["limit_train"] == 20 and s.meta["limit_test"] == 5

    def is_subset(small: torch.Tensor, big: torch.Tensor) -> bool:
        d = (small[:, None] - big[None]).abs().amax(dim=(2, 3))
        return bool((d.min(dim=1).values == 0).all())

    assert is_subset(s.train.inputs, full.train.inputs)
    assert is_subset(s.test.inputs, full.test.inputs)
    t = load_task("smnist", folder, val_fraction=0.1, limit_train=20, limit_test=5, seed=2)
    assert not torch.equal(t.test.inputs, s.test.inputs)
    big = load_task("smnist", folder, limit_train=10_000)  # larger than available: all kept
    assert len(big.train) + len(big.val) == 40


@pytest.mark.parametrize("vf", [1.0, -0.1, 1.5, float("nan"), "0.1", True])
def test_val_fraction_validated(mnist_dir, vf) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        load_task("smnist", mnist_dir[0], val_fraction=vf)


@pytest.mark.parametrize("key", ["limit_train", "limit_test"])
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_limits_validated(mnist_dir, key, value) -> None:
    with pytest.raises(ValueError, match=key):
        load_task("smnist", mnist_dir[0], **{key: value})


def test_val_fraction_leaving_no_train_raises(mnist_dir) -> None:
    with pytest.raises(DataError, match="no training examples"):
        load_task("smnist", mnist_dir[0], val_fraction=0.9, limit_train=1)


# -- corrupt and missing MNIST files --------------------------------------------------------


def _corrupt(folder: Path, key: str, writer, data, **kw) -> Path:
    for p in folder.glob(MNIST_NAMES[key] + "*"):
        p.unlink()
    return writer(folder / MNIST_NAMES[key], data, **kw)


def test_bad_image_magic(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "train_images", write_idx_images, a["train_x"], magic=0x0803_0000)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: bad magic 0x08030000"):
        load_task("smnist", folder)


def test_label_file_given_as_images(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "test_images", write_idx_images, a["test_x"], magic=2049)
    with pytest.raises(DataError, match=r"bad magic 0x00000801.*IDX label file"):
        load_task("smnist", folder)


def test_bad_label_magic(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "train_labels", write_idx_labels, a["train_y"], magic=2051)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: bad magic 0x00000803"):
        load_task("smnist", folder)


def test_truncated_images(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "train_images", write_idx_images, a["train_x"], truncate=100)
    expected = 16 + 40 * 784
    with pytest.raises(
        DataError, match=rf"truncated: expected {expected} bytes.* got {expected - 100}"
    ):
        load_task("smnist", folder)


def test_truncated_header(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="truncated: expected a 16-byte IDX header, got 3"):
        read_idx_images(tmp_path / "x")


def test_trailing_bytes(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "test_labels", write_idx_labels, a["test_y"], extra=b"\x00\x01")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: size mismatch.*trailing"):
        load_task("smnist", folder)


def test_header_count_larger_than_data(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "test_labels", write_idx_labels, a["test_y"], count=16)
    with pytest.raises(DataError, match=r"truncated: expected 24 bytes .*16 labels.* got 23"):
        load_task("smnist", folder)


def test_mismatched_counts(mnist_dir) -> None:
    folder, a = mnist_dir
    _corrupt(folder, "train_labels", write_idx_labels, a["train_y"][:39])
    with pytest.raises(DataError, match=r"has 40 images but .*train-labels.* has 39 labels"):
        load_task("smnist", folder)


def test_wrong_image_dimensions(mnist_dir) -> None:
    folder, _ = mnist_dir
    _corrupt(folder, "train_images", write_idx_images, np.zeros((40, 32, 32)))
    with pytest.raises(DataError, match="images are 32x32, expected 28x28"):
        load_task("smnist", folder)


def test_label_out_of_range(mnist_dir) -> None:
    folder, a = mnist_dir
    bad = a["train_y"].copy()
    bad[5] = 10
    _corrupt(folder, "train_labels", write_idx_labels, bad)
    with pytest.raises(DataError, match="label 10 at index 5 is out of range"):
        load_task("smnist", folder)


def test_corrupt_gzip(mnist_dir) -> None:
    folder, _ = mnist_dir
    path = folder / (MNIST_NAMES["train_images"] + ".gz")
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt gzip"):
        load_task("smnist", folder)


def test_missing_mnist_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_task("smnist", missing)
    msg = str(info.value)
    assert str(missing) in msg and "--data-dir" in msg and "MNIST" in msg
    for name in MNIST_NAMES.values():
        assert name in msg


def test_missing_mnist_files_named(mnist_dir) -> None:
    folder, _ = mnist_dir
    (folder / (MNIST_NAMES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte not found") as info:
        load_task("psmnist", folder)
    assert str(folder) in str(info.value) and "--data-dir" in str(info.value)


def test_no_data_dir_for_mnist() -> None:
    with pytest.raises(DataError, match="--data-dir"):
        load_task("smnist", None)


# -- CIFAR-10 --------------------------------------------------------------------------------


def test_read_cifar_batch_layout(tmp_path: Path) -> None:
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[0, 0, 0] = (10, 20, 30)  # pixel 0
    images[0, 0, 1] = (40, 50, 60)  # pixel 1
    images[1, 1, 0] = (70, 80, 90)  # pixel 32 (row-major)
    path = write_cifar_batch(tmp_path / "b.bin", images, [6, 9])
    raw = path.read_bytes()
    assert len(raw) == 2 * 3073 and raw[0] == 6 and raw[1] == 10 and raw[1 + 1024] == 20
    x, y = read_cifar_batch(path)
    assert x.shape == (2, 1024, 3) and y.tolist() == [6, 9]
    assert x[0, 0].tolist() == [10, 20, 30] and x[0, 1].tolist() == [40, 50, 60]
    assert x[1, 32].tolist() == [70, 80, 90]
    np.testing.assert_array_equal(x, images.reshape(2, 1024, 3))


def test_scifar10_shapes_values_and_normalisation(cifar_dir) -> None:
    folder, a = cifar_dir
    with pytest.warns(UserWarning, match=r"found 2 of 5 training batches"):
        s = load_task("scifar10", folder, val_fraction=0.0)
    assert s.train.inputs.shape == (24, 1024, 3) and s.test.inputs.shape == (7, 1024, 3)
    assert s.meta["cifar_train_batches"] == 2
    assert s.meta["cifar_train_files"] == ["data_batch_1.bin", "data_batch_2.bin"]
    np.testing.assert_array_equal(s.train.labels.numpy(), a["train_y"])
    np.testing.assert_array_equal(s.test.labels.numpy(), a["test_y"])
    raw = a["train_x"].reshape(24, 1024, 3).astype(np.float64) / 255.0
    mean, std = raw.mean(axis=(0, 1)), raw.std(axis=(0, 1))
    np.testing.assert_allclose(s.meta["norm_mean"], mean, rtol=1e-6)
    np.testing.assert_allclose(s.meta["norm_std"], std, rtol=1e-6)
    np.testing.assert_allclose(s.train.inputs.numpy(), (raw - mean) / std, atol=1e-5)
    test_raw = a["test_x"].reshape(7, 1024, 3) / 255.0
    np.testing.assert_allclose(s.test.inputs.numpy(), (test_raw - mean) / std, atol=1e-5)
    json.dumps(s.meta)


def test_cifar_stats_come_from_train_split_only(cifar_dir) -> None:
    folder, a = cifar_dir
    s = _quiet(load_task, "scifar10", folder, val_fraction=0.5, seed=3)
    x = s.train.inputs.numpy().astype(np.float64)
    np.testing.assert_allclose(x.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1)), 1.0, atol=1e-4)
    # Changing the test set leaves training statistics untouched.
    write_cifar_batch(folder / "test_batch.bin", np.full((7, 32, 32, 3), 255), a["test_y"])
    t = _quiet(load_task, "scifar10", folder, val_fraction=0.5, seed=3)
    assert t.meta["norm_mean"] == s.meta["norm_mean"]
    assert torch.equal(t.train.inputs, s.train.inputs)


def test_cifar_parent_dir_and_five_batches_no_warning(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path / "cifar-10-batches-bin", per_batch=3, n_batches=5, n_test=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = load_task("scifar10", tmp_path, val_fraction=0.2)
    assert s.meta["cifar_train_batches"] == 5
    assert (len(s.train), len(s.val), len(s.test)) == (12, 3, 4)


def test_cifar_wrong_record_size(cifar_dir) -> None:
    folder, a = cifar_dir
    write_cifar_batch(folder / "data_batch_2.bin", a["train_x"][:12], a["train_y"][:12], truncate=5)
    with pytest.raises(
        DataError, match=r"data_batch_2\.bin: file size 36871 .*multiple of the 3073"
    ):
        _quiet(load_task, "scifar10", folder)


def test_cifar_label_out_of_range(cifar_dir) -> None:
    folder, a = cifar_dir
    y = a["test_y"].copy()
    y[3] = 12
    write_cifar_batch(folder / "test_batch.bin", a["test_x"], y)
    with pytest.raises(DataError, match=r"test_batch\.bin: record 3 has label 12"):
        _quiet(load_task, "scifar10", folder)


def test_cifar_empty_file(cifar_dir) -> None:
    folder, _ = cifar_dir
    (folder / "test_batch.bin").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        _quiet(load_task, "scifar10", folder)


def test_cifar_missing_test_batch(cifar_dir) -> None:
    folder, _ = cifar_dir
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"no test_batch\.bin"):
        load_task("scifar10", folder)


def test_cifar_missing_train_batches(cifar_dir) -> None:
    folder, _ = cifar_dir
    for p in folder.glob("data_batch_*"):
        p.unlink()
    with pytest.raises(DataError, match=r"no CIFAR-10 training batches.*data_batch_1\.bin"):
        load_task("scifar10", folder)


def test_cifar_missing_dir_lists_expected(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_task("scifar10", tmp_path)
    msg = str(info.value)
    assert "data_batch_1.bin" in msg and "test_batch.bin" in msg and str(tmp_path) in msg
    assert "cifar-10-binary.tar.gz" in msg and "--data-dir" in msg


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-py"])
def test_pickled_cifar_refused(tmp_path: Path, sub: str) -> None:
    folder = tmp_path / sub
    folder.mkdir(exist_ok=True)
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        (folder / name).write_bytes(b"\x80\x02this would be a pickle")
    with pytest.raises(DataError, match="pickle") as info:
        load_task("scifar10", tmp_path)
    msg = str(info.value)
    assert "python" in msg and "cifar-10-binary.tar.gz" in msg and "never" in msg


# -- digits and MNIST-1D --------------------------------------------------------------------


def test_digits_and_pdigits() -> None:
    s = load_task("digits", val_fraction=0.1, seed=0)
    assert s.train.inputs.shape[1:] == (64, 1) and s.num_classes == 10
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert len(s.test) == 359
    x = s.train.inputs.double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1.0) < 1e-4
    # Documented recipe: pixels / 16 then standardise with the train split's scalar mean/std.
    assert 0.0 < s.meta["norm_mean"][0] < 1.0
    # The test split is fixed, independent of `seed` (only the train statistics move).
    other = load_task("digits", seed=1)
    assert torch.equal(other.test.labels, s.test.labels)

    def undo(d: DataSplits) -> torch.Tensor:
        return d.test.inputs.double() * d.meta["norm_std"][0] + d.meta["norm_mean"][0]

    assert torch.allclose(undo(other), undo(s), atol=1e-5)
    assert not torch.equal(other.val.labels, s.val.labels)
    p = load_task("pdigits", seed=0, permutation_seed=2)
    perm = p.meta["permutation"]
    assert sorted(perm) == list(range(64)) and perm == make_permutation(64, 2)
    assert torch.equal(p.train.inputs, s.train.inputs[:, perm])
    q = load_task("pdigits", seed=0, permutation=perm, permutation_seed=0)
    assert torch.equal(q.test.inputs, p.test.inputs)


def test_mnist1d_generates_locally_and_caches(tmp_path: Path, monkeypatch) -> None:
    import requests

    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d tried to download")

    monkeypatch.setattr(requests, "get", no_network)
    cache = tmp_path / "cache"
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    s = load_task("mnist1d", cache_dir=cache, mnist1d_samples=100, val_fraction=0.1)
    assert (random.random(), np.random.rand()) == before  # global RNG state untouched
    assert s.train.inputs.shape == (72, 40, 1) and len(s.val) == 8 and len(s.test) == 20
    assert s.meta["mnist1d_args"]["num_samples"] == 100
    files = list(cache.glob("mnist1d-*.npz"))
    assert len(files) == 1 and s.meta["cache_file"] == str(files[0])
    x = s.train.inputs.double()
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std(unbiased=False)) - 1.0) < 1e-4
    with np.load(files[0], allow_pickle=False) as npz:
        assert set(npz.files) == {"key", "x", "y", "x_test", "y_test", "package_perm"}
    again = load_task("mnist1d", cache_dir=cache, mnist1d_samples=100, val_fraction=0.1)
    assert torch.equal(again.train.inputs, s.train.inputs)
    assert torch.equal(again.test.labels, s.test.labels)
    # The cache really is read: tampered (but well-formed) cached labels show up.
    good = files[0].read_bytes()
    with np.load(files[0], allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["y_test"] = (arrays["y_test"] + 1) % 10
    with open(files[0], "wb") as fh:
        np.savez(fh, **arrays)
    tampered = load_task("mnist1d", cache_dir=cache, mnist1d_samples=100, val_fraction=0.1)
    assert torch.equal(tampered.test.labels, (s.test.labels + 1) % 10)
    # Corrupt cache files (garbage, truncated zip) are regenerated, giving identical data.
    for junk in (b"not a zip file", good[: len(good) // 2]):
        files[0].write_bytes(junk)
        regen = load_task("mnist1d", cache_dir=cache, mnist1d_samples=100, val_fraction=0.1)
        assert torch.equal(regen.train.inputs, s.train.inputs)
        assert torch.equal(regen.test.labels, s.test.labels)
        assert files[0].read_bytes() == good
    json.dumps(s.meta)


def test_mnist1d_shuffled_permutation(tmp_path: Path) -> None:
    kw = {"cache_dir": tmp_path, "mnist1d_samples": 50, "val_fraction": 0.2}
    plain = load_task("mnist1d", **kw)
    a = load_task("mnist1d-shuffled", permutation_seed=5, **kw)
    perm = a.meta["permutation"]
    assert sorted(perm) == list(range(40)) and perm == make_permutation(40, 5)
    assert torch.equal(a.train.inputs, plain.train.inputs[:, perm])
    assert torch.equal(a.test.inputs, plain.test.inputs[:, perm])
    b = load_task("mnist1d-shuffled", permutation=perm, permutation_seed=0, **kw)
    assert torch.equal(b.val.inputs, a.val.inputs)


def test_mnist1d_package_shuffled_variant_reproducible(tmp_path: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    kw = {"cache_dir": tmp_path, "mnist1d_samples": 50, "val_fraction": 0.0}
    pkg_perm = load_task("mnist1d", **kw).meta["mnist1d_package_permutation"]
    ours = load_task("mnist1d-shuffled", permutation=pkg_perm, **kw)
    args = get_dataset_args()
    args.num_samples, args.shuffle_seq = 50, True
    state = (random.getstate(), np.random.get_state())
    try:
        theirs = make_dataset(args)  # reseeds the global RNGs; restored below
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
    x = np.asarray(theirs["x"], dtype=np.float64)
    expected = (x - x.mean()) / x.std()  # our train-split standardisation (no val split here)
    np.testing.assert_allclose(ours.train.inputs[:, :, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(ours.train.labels.numpy(), theirs["y"])


def test_mnist1d_samples_validated(tmp_path: Path, mnist_dir) -> None:
    with pytest.raises(ValueError, match="mnist1d_samples"):
        load_task("mnist1d", cache_dir=tmp_path, mnist1d_samples=5)
    with pytest.raises(ValueError, match="mnist1d_samples only applies"):
        load_task("smnist", mnist_dir[0], mnist1d_samples=100)


# -- registry, datasets and loaders ---------------------------------------------------------


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match=r"Invalid task: must be one of \[.*smnist.*\], got 'x'"):
        load_task("x")


def test_registry_names_and_shapes() -> None:
    assert set(TASKS) == {
        "digits",
        "pdigits",
        "mnist1d",
        "mnist1d-shuffled",
        "smnist",
        "psmnist",
        "scifar10",
    }
    assert (TASKS["scifar10"].steps, TASKS["scifar10"].features) == (1024, 3)
    assert TASKS["psmnist"].permuted and not TASKS["smnist"].permuted
    s = TASKS["digits"](seed=0)
    assert s.steps == TASKS["digits"].steps and s.name == "digits"


def test_sequence_dataset_validates() -> None:
    x = torch.zeros(3, 4, 2)
    y = torch.tensor([0, 1, 2])
    ds = SequenceDataset("t", x, y, 3)
    assert (len(ds), ds.steps, ds.features) == (3, 4, 2)
    xi, yi = ds[1]
    assert xi.shape == (4, 2) and int(yi) == 1
    with pytest.raises(ValueError, match="float32"):
        SequenceDataset("t", x.double(), y, 3)
    with pytest.raises(ValueError, match="labels"):
        SequenceDataset("t", x, y[:2], 3)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        SequenceDataset("t", x, y, 2)


def test_make_loader_deterministic(mnist_dir) -> None:
    s = load_task("smnist", mnist_dir[0], val_fraction=0.0)

    def labels(seed: int) -> list[int]:
        batches = list(make_loader(s.train, 8, True, seed))
        assert all(xb.shape[1:] == (784, 1) for xb, _ in batches)
        return torch.cat([yb for _, yb in batches]).tolist()

    assert labels(0) == labels(0)
    assert labels(0) != labels(1)
    assert sorted(labels(0)) == sorted(s.train.labels.tolist())
    plain = torch.cat([yb for _, yb in make_loader(s.train, 8, shuffle=False, seed=0)])
    assert torch.equal(plain, s.train.labels)
    dropped = list(make_loader(s.train, 16, shuffle=True, seed=0, drop_last=True))
    assert [len(yb) for _, yb in dropped] == [16, 16]
    sampler = torch.utils.data.SequentialSampler(range(len(s.train)))
    assert len(list(make_loader(s.train, 8, seed=0, sampler=sampler))) == 5
    with pytest.raises(ValueError, match="sampler"):
        make_loader(s.train, 8, shuffle=True, seed=0, sampler=sampler)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(s.train, 0)


# -- issue 11, item 3: sizes checked before reading; streams capped at the claimed size ----------
def test_gzip_bomb_is_refused_after_the_claimed_size(tmp_path: Path) -> None:
    """The issue's bomb: 7.6 MB of .gz with a 60,000-label header that inflates to 7.84 GB
    (it ended in MemoryError after 28 s). Reading stops one byte after the claimed size, so
    peak memory stays tiny."""
    import struct
    import tracemalloc

    path = write_gzip_bomb(tmp_path / "train-labels-idx1-ubyte.gz",
                           struct.pack(">II", 2049, 60_000), 7_840_000_000)
    assert path.stat().st_size < 8_000_000  # 7.6 MB that inflates to 7.84 GB
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"size mismatch: expected 60008 bytes \(header says "
                                            r"60000 labels\) but it decompresses to more"):
            read_idx_labels(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_gzip_header_claiming_more_than_the_file_can_hold(tmp_path: Path) -> None:
    import struct

    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, 10_000_000, 28, 28)))
    with pytest.raises(DataError, match=r"claims 7840000016 bytes \(header says 10000000 "
                                        r"images of 28x28\), more than a \d+-byte gzip file can"):
        read_idx_images(path)


def test_claimed_size_above_free_memory(tmp_path: Path, monkeypatch) -> None:
    from combonet.data import base

    monkeypatch.setattr(base, "available_memory", lambda: 1000)
    path = write_idx_labels(tmp_path / "l.gz", np.zeros(5000, dtype=np.uint8))
    with pytest.raises(DataError, match="more than the 1000 bytes of memory available"):
        read_idx_labels(path)


def test_sparse_huge_label_file_is_refused_before_reading(tmp_path: Path) -> None:
    """A 20 GB (sparse) file with a valid 60,000-label header used to be read whole."""
    import struct

    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2049, 60_000))
    os.truncate(path, 20 << 30)
    with pytest.raises(DataError, match=r"size mismatch: expected 60008 bytes \(header says "
                                        r"60000 labels\) got 21474836480 \(trailing data\)"):
        read_idx_labels(path)


def test_sparse_huge_cifar_batch_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1.bin"
    path.touch()
    os.truncate(path, 3073 * 7_000_000)  # 21.5 GB, a whole number of records
    with pytest.raises(DataError, match=r"holds 7000000 records, more than the 10000 of a "
                                        "CIFAR-10 batch"):
        read_cifar_batch(path)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "broken-link", "directory"])
def test_data_files_that_are_not_regular_files(mnist_dir, kind) -> None:
    folder, _ = mnist_dir
    name = MNIST_NAMES["train_labels"]
    for p in folder.glob(name + "*"):
        p.unlink()
    target = folder / name
    if kind == "dev-zero":
        target.symlink_to("/dev/zero")
        match = r"not a regular file: it is a character device \(a symbolic link to /dev/zero\)"
    elif kind == "fifo":
        os.mkfifo(target)  # reading would block forever
        match = "not a regular file: it is a FIFO"
    elif kind == "broken-link":
        target.symlink_to(folder / "nowhere")
        match = "broken symbolic link"
    else:
        target.mkdir()
        match = "not a regular file: it is a directory"
    with pytest.raises(DataError, match=match):
        load_task("smnist", folder)


def test_cifar_batch_linked_to_dev_zero(cifar_dir) -> None:
    folder, _ = cifar_dir
    (folder / "test_batch.bin").unlink()
    (folder / "test_batch.bin").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"test_batch\.bin: not a regular file: it is a character"):
        _quiet(load_task, "scifar10", folder)
