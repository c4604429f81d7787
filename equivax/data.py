"""Handwritten-digit data sets as NumPy arrays: an offline default and MNIST.

Two sources, both returned as a `Dataset` of 28×28×1 float32 images in [0, 1]:

- ``"digits"`` (the default, works offline on a fresh machine): the UCI handwritten digits that ship inside
  scikit-learn, 8×8 resized to 28×28. It is never called MNIST.
- ``"mnist"``: MNIST read with tensorflow-datasets' random-access ``tfds.data_source``, which needs no
  TensorFlow to read but needs the data prepared beforehand in the ``array_record`` format (see
  `prepare_mnist`). When it is not prepared, `mnist` fails at once with `DataUnavailable`
  instead of trying to download.

Neither scikit-learn nor tensorflow-datasets is imported until a loader needs it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DIGITS_NAME",
    "MNIST_NAME",
    "DataUnavailable",
    "Dataset",
    "batches",
    "digits",
    "load",
    "mnist",
    "prepare_mnist",
]

DIGITS_NAME = "UCI handwritten digits (scikit-learn), 8×8 resized to 28×28"
MNIST_NAME = "MNIST"

_NAMES = ("digits", "mnist")
_SPLITS = ("train", "test")
_SIDE = 28  # images are _SIDE × _SIDE × 1, like MNIST
_DIGIT_BOX = 20  # MNIST fits each digit in a 20×20 box centred in the 28×28 frame
_TEST_FRACTION = 0.25  # of each digit class, rounded: 1,347 train / 450 test
_SPLIT_SEED = 0  # fixed, so the test split never depends on the caller's seed
_INSTALL_HINT = 'pip install "equivax[data]"'


class DataUnavailable(RuntimeError):
    """A data set cannot be read here: a package is missing or the data is not prepared."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images of one split of one data set, as NumPy arrays.

    Attributes:
        name: the data set's plain name, e.g. ``DIGITS_NAME`` or ``"MNIST"``.
        split: ``"train"`` or ``"test"``.
        images: ``(N, 28, 28, 1)`` float32 in [0, 1].
        labels: ``(N,)`` int32 digit classes 0..9.
        source: one sentence naming where the data came from.

    Examples:
        >>> import numpy as np
        >>> tiny = Dataset("toy", "train", np.zeros((2, 28, 28, 1), np.float32), np.array([3, 7], np.int32), "zeros")
        >>> len(tiny)
        2
    """

    name: str
    split: str
    images: np.ndarray  # (N, 28, 28, 1) float32 in [0, 1]
    labels: np.ndarray  # (N,) int32
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1:] != (_SIDE, _SIDE, 1) or self.images.dtype != np.float32:
            raise ValueError(
                f"Dataset images must be float32 of shape (N, {_SIDE}, {_SIDE}, 1), got {self.images.dtype} "
                f"{self.images.shape}; convert with images.reshape(-1, {_SIDE}, {_SIDE}, 1).astype(np.float32)."
            )
        if self.labels.shape != (len(self.images),) or self.labels.dtype != np.int32:
            raise ValueError(
                f"Dataset labels must be int32 of shape ({len(self.images)},) to match the images, got "
                f"{self.labels.dtype} {self.labels.shape}; pass one int32 label per image."
            )

    def __len__(self) -> int:
        return len(self.labels)


def load(
    name: str = "digits",
    split: str = "train",
    *,
    data_dir: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load one split of a handwritten-digit data set by name.

    Args:
        name: ``"digits"`` (offline: UCI handwritten digits from scikit-learn, 8×8 resized to 28×28) or
            ``"mnist"`` (tensorflow-datasets, prepared beforehand).
        split: ``"train"`` or ``"test"``.
        data_dir: where MNIST is prepared; defaults to ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``.
            Ignored for ``"digits"``.
        limit: keep only the first ``limit`` examples (after the seeded shuffle for ``"digits"``).
        seed: order of the ``"digits"`` examples; MNIST keeps its stored order.

    Returns:
        The split as a `Dataset`.

    Raises:
        ValueError: for an unknown name, split or limit.
        DataUnavailable: when a needed package is missing or MNIST is not prepared.

    Examples:
        >>> train = load("digits", "train", limit=10)
        >>> train.images.shape, train.name
        ((10, 28, 28, 1), 'UCI handwritten digits (scikit-learn), 8×8 resized to 28×28')
    """
    if name == "digits":
        return digits(split, seed=seed, limit=limit)
    if name == "mnist":
        return mnist(split, data_dir=data_dir, limit=limit)
    raise ValueError(
        f"Unknown data set name {name!r}; choose 'digits' (offline, UCI handwritten digits from scikit-learn) "
        "or 'mnist' (tensorflow-datasets, prepared beforehand)."
    )


def digits(split: str = "train", *, seed: int = 0, limit: int | None = None) -> Dataset:
    """UCI handwritten digits shipped in scikit-learn, resized to MNIST's 28×28 frame; works offline.

    The 1,797 8×8 images (values 0..16) are resized bilinearly (half-pixel centres, edges clamped) to 20×20,
    centred in a 28×28 frame of zeros (MNIST puts each digit in a 20×20 box inside 28×28; MNIST also centres
    by the centre of mass, which this does not) and divided by 16. The split is fixed and stratified: a
    quarter of each digit class (rounded), drawn with a fixed seed, is the test split: 1,347 train / 450
    test, disjoint. ``seed`` only orders the examples within the split.

    Args:
        split: ``"train"`` (1,347 images) or ``"test"`` (450 images).
        seed: seed of the shuffle of the split's examples.
        limit: keep only the first ``limit`` examples after the shuffle.

    Returns:
        The split as a `Dataset` named ``DIGITS_NAME``.

    Examples:
        >>> test = digits("test")
        >>> len(test), float(test.images.min()), float(test.images.max()) <= 1.0
        (450, 0.0, True)
    """
    _check_split(split)
    _check_limit(limit)
    images, labels, is_test = _digits_arrays()
    members = np.flatnonzero(is_test == (split == "test"))
    order = np.random.default_rng(seed).permutation(members)[:limit]
    return Dataset(
        name=DIGITS_NAME,
        split=split,
        images=images[order],
        labels=labels[order],
        source=(
            "The UCI ML hand-written digits (optdigits test set, 8×8 counts 0..16) shipped in scikit-learn's "
            "load_digits, resized bilinearly to 20×20 and centred in a 28×28 frame."
        ),
    )


def mnist(split: str = "train", *, data_dir: str | None = None, limit: int | None = None) -> Dataset:
    """MNIST read with ``tfds.data_source`` from an ``array_record`` copy prepared beforehand.

    Reading needs tensorflow-datasets (and Pillow or OpenCV to decode the PNGs) but no TensorFlow. Nothing
    is downloaded: when the data is not prepared under the data folder this raises `DataUnavailable`
    within about a second, naming the fix. See `prepare_mnist` for preparing it.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        data_dir: the tensorflow-datasets data folder; defaults to ``$TFDS_DATA_DIR``, else
            ``~/tensorflow_datasets``.
        limit: read only the first ``limit`` examples in stored order (all when None).

    Returns:
        The split as a `Dataset` named ``"MNIST"``, images uint8 / 255.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as empty_folder:
        ...     try:
        ...         mnist("test", data_dir=empty_folder)
        ...     except DataUnavailable:
        ...         print("not prepared")
        not prepared
    """
    _check_split(split)
    _check_limit(limit)
    tfds = _import_tfds()
    root = _tfds_data_dir(data_dir)
    try:
        source = tfds.data_source("mnist", split=split, data_dir=str(root), download=False)
    except (AssertionError, FileNotFoundError, NotImplementedError, ValueError) as error:
        raise DataUnavailable(_mnist_unavailable_message(root)) from error
    count = len(source) if limit is None else min(limit, len(source))
    examples = [source[index] for index in range(count)]
    images = np.stack([example["image"] for example in examples]) if examples else np.zeros((0, _SIDE, _SIDE, 1))
    labels = np.array([example["label"] for example in examples], dtype=np.int32)
    return Dataset(
        name=MNIST_NAME,
        split=split,
        images=(images.reshape(-1, _SIDE, _SIDE, 1) / 255.0).astype(np.float32),
        labels=labels,
        source=f"MNIST (LeCun, Cortes and Burges) read with tensorflow-datasets' data_source from {root}.",
    )


def prepare_mnist(data_dir: str | None = None) -> Path:
    """Download MNIST and write it in the ``array_record`` format that ``tfds.data_source`` reads.

    An optional, one-off step on a machine with internet access **and TensorFlow installed**: the
    tensorflow-datasets MNIST builder parses the downloaded files with ``tf.io.gfile`` and encodes the
    images with ``tf.image.encode_png``. Reading afterwards needs no TensorFlow. For example::

        pip install "equivax[data]" tensorflow
        python -c "from equivax.data import prepare_mnist; print(prepare_mnist('/data/tfds'))"
        export TFDS_DATA_DIR=/data/tfds   # or copy /data/tfds/mnist to the other machine's data folder

    Args:
        data_dir: the tensorflow-datasets data folder to write to; defaults to ``$TFDS_DATA_DIR``, else
            ``~/tensorflow_datasets``.

    Returns:
        The folder written, ``<data_dir>/mnist/<version>``.

    Raises:
        DataUnavailable: when TensorFlow or tensorflow-datasets is not installed.

    Examples:
        >>> import importlib.util
        >>> if importlib.util.find_spec("tensorflow") is None:
        ...     try:
        ...         prepare_mnist()
        ...     except DataUnavailable as error:
        ...         print("needs TensorFlow")
        ... else:
        ...     print("needs TensorFlow")
        needs TensorFlow
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise DataUnavailable(
            "prepare_mnist needs TensorFlow (tensorflow-datasets' MNIST builder uses it to write the data), "
            f"which is not installed; on a machine with internet run `{_INSTALL_HINT} tensorflow`, call "
            "prepare_mnist(data_dir) there and point TFDS_DATA_DIR or data_dir at the result here, or use "
            'the offline load("digits").'
        )
    tfds = _import_tfds()
    builder = tfds.builder("mnist", data_dir=str(_tfds_data_dir(data_dir)), file_format="array_record")
    builder.download_and_prepare()
    return Path(builder.data_dir)


def batches(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(images, labels)`` batches covering the data set once, in a seeded random order.

    Args:
        dataset: the examples to batch.
        batch_size: examples per batch; the last batch may be smaller.
        seed: seed of the shuffle; the same seed gives the same batches.
        shuffle: visit examples in a random order (True) or in stored order (False).
        drop_last: leave out a final batch smaller than ``batch_size``.

    Returns:
        An iterator of ``(images (B, 28, 28, 1) float32, labels (B,) int32)`` NumPy pairs.

    Examples:
        >>> sizes = [len(labels) for _, labels in batches(load("digits", limit=10), 4)]
        >>> sizes
        [4, 4, 2]
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}; pass e.g. batch_size=64.")
    order = np.random.default_rng(seed).permutation(len(dataset)) if shuffle else np.arange(len(dataset))
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        chosen = order[start : start + batch_size]
        yield dataset.images[chosen], dataset.labels[chosen]


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose 'train' or 'test'.")


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}; pass e.g. limit=100.")


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 1,797 digits in the 28×28 frame, their labels and the fixed test-split mask (read-only)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataUnavailable(
            f"The offline digits data set needs scikit-learn, which is not installed; run `{_INSTALL_HINT}`."
        ) from error
    raw = load_digits()
    images = _to_mnist_frame(raw.images / 16.0)
    labels = raw.target.astype(np.int32)
    is_test = _stratified_test_mask(labels, _TEST_FRACTION, _SPLIT_SEED)
    for array in (images, labels, is_test):
        array.setflags(write=False)
    return images, labels, is_test


def _linear_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """The ``(size_out, size_in)`` matrix of 1-D linear interpolation with half-pixel centres, edges clamped."""
    positions = np.clip((np.arange(size_out) + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    lower = np.floor(positions).astype(int)
    upper = np.minimum(lower + 1, size_in - 1)
    weight_upper = positions - lower
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (np.arange(size_out), lower), 1.0 - weight_upper)
    np.add.at(matrix, (np.arange(size_out), upper), weight_upper)
    return matrix


def _to_mnist_frame(images: np.ndarray) -> np.ndarray:
    """Resize ``(N, h, w)`` images in [0, 1] bilinearly to 20×20 and centre them in ``(N, 28, 28, 1)`` float32."""
    rows = _linear_resize_matrix(images.shape[1], _DIGIT_BOX)
    cols = _linear_resize_matrix(images.shape[2], _DIGIT_BOX)
    boxed = np.einsum("ij,njk,lk->nil", rows, images, cols)
    margin = (_SIDE - _DIGIT_BOX) // 2
    framed = np.pad(boxed, ((0, 0), (margin, margin), (margin, margin)))
    return np.clip(framed, 0.0, 1.0).astype(np.float32)[..., None]


def _stratified_test_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mark ``round(fraction × class size)`` random examples of each class as test."""
    order = np.random.default_rng(seed).permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]  # grouped by class, random within a class
    sorted_labels = labels[order]
    rank_in_class = np.arange(len(order)) - np.searchsorted(sorted_labels, sorted_labels)
    class_sizes = np.bincount(labels)
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[order] = rank_in_class < np.round(class_sizes[sorted_labels] * fraction)
    return is_test


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataUnavailable(
            f"Reading MNIST needs tensorflow-datasets, which is not installed; run `{_INSTALL_HINT}`, or use the "
            'offline load("digits").'
        ) from error
    return tfds


def _tfds_data_dir(data_dir: str | None) -> Path:
    """The tensorflow-datasets data folder: ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    chosen = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return Path(chosen).expanduser()


def _mnist_unavailable_message(root: Path) -> str:
    """Say what was found under ``root/mnist`` and how to get MNIST, or to use the offline digits instead."""
    return (
        f"MNIST is not prepared for tfds.data_source in {root} ({_describe_mnist_folder(root / 'mnist')}); "
        'nothing was downloaded. Use the offline default load("digits") (UCI handwritten digits from '
        "scikit-learn), or prepare MNIST in the array_record format on a machine with internet and TensorFlow "
        "with equivax.data.prepare_mnist(data_dir) and point TFDS_DATA_DIR or data_dir at that folder."
    )


def _describe_mnist_folder(folder: Path) -> str:
    if not folder.is_dir():
        return f"no folder {folder}"
    versions = sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith("incomplete"))
    if not versions:
        return f"{folder} holds no prepared version"
    found = []
    for version in versions:
        record_files = list(version.glob("mnist-*.array_record-*"))
        state = f"{len(record_files)} array_record files" if record_files else "no array_record files (TFRecord?)"
        found.append(f"version {version.name}: {state}")
    return "found " + "; ".join(found)
