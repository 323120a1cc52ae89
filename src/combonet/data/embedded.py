"""Datasets that need no download: sklearn's 8x8 digits and procedurally generated MNIST-1D.

* ``digits``: ``sklearn.datasets.load_digits`` (1797 images shipped with scikit-learn), read
  pixel by pixel as 64 steps x 1 feature. A fixed 20 % test split is drawn once with
  ``default_rng(DIGITS_TEST_SEED)`` so it is the same whatever ``seed`` is used.
* ``mnist1d``: generated locally with ``mnist1d.data.make_dataset`` (the procedural generator;
  ``mnist1d.data.get_dataset`` is never called because by default it downloads and unpickles
  a file). Arrays are cached as ``.npz`` keyed by the generation arguments.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._validate import integer
from .base import DataError, DataSplits, LoadOptions, build_splits

__all__ = [
    "DIGITS_TEST_FRACTION",
    "DIGITS_TEST_SEED",
    "default_cache_dir",
    "generate_mnist1d",
    "load_digits_task",
    "load_mnist1d",
    "mnist1d_args",
]

log = logging.getLogger(__name__)

DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 0
_CACHE_VERSION = 2


def load_digits_task(
    *,
    name: str = "digits",
    options: LoadOptions | None = None,
    permutation: np.ndarray | None = None,
    permutation_seed: int | None = None,
) -> DataSplits:
    """sklearn digits as 64-step sequences; pixels / 16, then train-split standardisation."""
    from sklearn.datasets import load_digits

    options = options or LoadOptions()
    x, y = load_digits(return_X_y=True)
    x = np.asarray(x, dtype=np.float32).reshape(-1, 64, 1)
    y = np.asarray(y, dtype=np.int64)
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    order = np.random.default_rng(DIGITS_TEST_SEED).permutation(len(y))
    test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
    return build_splits(
        name,
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        num_classes=10,
        options=options,
        scale=1.0 / 16.0,
        norm="scalar",
        permutation=permutation,
        permutation_seed=permutation_seed,
        meta={
            "dataset": "digits",
            "digits_test_fraction": DIGITS_TEST_FRACTION,
            "digits_test_seed": DIGITS_TEST_SEED,
        },
    )


def default_cache_dir() -> Path:
    """``$COMBONET_CACHE`` if set, else ``~/.cache/combonet``."""
    env = os.environ.get("COMBONET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "combonet"


def _mnist1d_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist1d")
    except PackageNotFoundError:  # pragma: no cover - vendored copy
        return "unknown"


def mnist1d_args(num_samples: int | None = None) -> dict[str, Any]:
    """The package's default generation arguments (minus its download ``url``)."""
    from mnist1d.data import get_dataset_args

    args = dict(get_dataset_args(as_dict=True))
    args.pop("url", None)
    if num_samples is not None:
        if isinstance(num_samples, np.integer):
            num_samples = int(num_samples)
        integer("mnist1d_samples", num_samples, 20)
        args["num_samples"] = int(num_samples)
    # JSON-normalise (tuples -> lists) so the cache key and meta are stable.
    return json.loads(json.dumps(args))


def _generate(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the package's procedural generator without disturbing global RNG state."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    py_state, np_state = random.getstate(), np.random.get_state()
    try:  # make_dataset reseeds the *global* `random` and `np.random` generators.
        data = make_dataset(ObjectView(dict(args)))
        # With shuffle_seq=True the package would draw its time permutation right here.
        package_perm = np.random.permutation(int(args["final_seq_length"]))
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {
        "x": np.asarray(data["x"], dtype=np.float64),
        "y": np.asarray(data["y"], dtype=np.int64),
        "x_test": np.asarray(data["x_test"], dtype=np.float64),
        "y_test": np.asarray(data["y_test"], dtype=np.int64),
        "package_perm": package_perm.astype(np.int64),
    }


def _valid(arrays: dict[str, np.ndarray], length: int) -> bool:
    x, y, xt, yt = arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"]
    return (
        x.ndim == 2
        and xt.ndim == 2
        and x.shape[1] == length
        and xt.shape[1] == length
        and y.shape == (x.shape[0],)
        and yt.shape == (xt.shape[0],)
        and np.array_equal(np.sort(arrays["package_perm"]), np.arange(length))
        and x.shape[0] > 0
        and xt.shape[0] > 0
        and bool(np.isfinite(x).all() and np.isfinite(xt).all())
        and bool(((y >= 0) & (y < 10)).all() and ((yt >= 0) & (yt < 10)).all())
    )


def _read_cache(path: Path, key_json: str, length: int) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key_json:
                raise ValueError("cache key mismatch")
            arrays = {k: np.array(npz[k]) for k in ("x", "y", "x_test", "y_test", "package_perm")}
        if not _valid(arrays, length):
            raise ValueError("cached arrays have wrong shapes or values")
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ignoring corrupt mnist1d cache %s (%s); regenerating", path, exc)
        return None


def _write_cache(path: Path, key_json: str, arrays: dict[str, np.ndarray]) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, key=np.array(key_json), **arrays)
            os.replace(tmp, path)  # atomic: concurrent readers never see a partial file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        log.warning("could not write mnist1d cache %s (%s); continuing uncached", path, exc)
        return False
    return True


def generate_mnist1d(
    num_samples: int | None = None, cache_dir: str | Path | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], Path]:
    """MNIST-1D arrays (cached), the generation args and the cache path.

    Arrays: ``x``, ``y``, ``x_test``, ``y_test`` (unshuffled) and ``package_perm``, the time
    permutation the package itself would apply with ``shuffle_seq=True``.
    """
    args = mnist1d_args(num_samples)
    if args.get("shuffle_seq"):
        raise DataError("mnist1d generation must not shuffle the sequence (done by combonet)")
    key_json = json.dumps(
        {"args": args, "mnist1d": _mnist1d_version(), "format": _CACHE_VERSION}, sort_keys=True
    )
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = folder / f"mnist1d-{digest}.npz"
    length = int(args["final_seq_length"])
    arrays = _read_cache(path, key_json, length)
    if arrays is None:
        arrays = _generate(args)
        if not _valid(arrays, length):  # pragma: no cover - guards against package changes
            raise DataError("mnist1d generator returned arrays of unexpected shape")
        _write_cache(path, key_json, arrays)
    return arrays, args, path


def load_mnist1d(
    *,
    name: str = "mnist1d",
    options: LoadOptions | None = None,
    permutation: np.ndarray | None = None,
    permutation_seed: int | None = None,
    cache_dir: str | Path | None = None,
    num_samples: int | None = None,
) -> DataSplits:
    """MNIST-1D (40 steps x 1 feature), standardised with the train split's mean/std.

    ``meta["mnist1d_package_permutation"]`` is the permutation of the package's own
    ``shuffle_seq`` variant; pass it as ``permutation=`` to ``mnist1d-shuffled`` to get exactly
    that variant. The package standardises over train+test; the affine re-standardisation here with
    training-split statistics exactly cancels that, so no test statistics leak in.
    """
    options = options or LoadOptions()
    arrays, args, path = generate_mnist1d(num_samples, cache_dir)
    return build_splits(
        name,
        arrays["x"][:, :, None],
        arrays["y"],
        arrays["x_test"][:, :, None],
        arrays["y_test"],
        num_classes=10,
        options=options,
        norm="scalar",
        permutation=permutation,
        permutation_seed=permutation_seed,
        meta={
            "dataset": "mnist1d",
            "mnist1d_args": args,
            "mnist1d_version": _mnist1d_version(),
            "cache_file": str(path),
            "mnist1d_package_permutation": [int(i) for i in arrays["package_perm"]],
        },
    )
