"""Tests of equivax.data: the offline digits, batching, and MNIST through tfds.data_source (no network)."""

import json
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from equivax.data import DIGITS_NAME, Dataset, DataUnavailable, batches, digits, load, mnist, prepare_mnist

SPLIT_SIZES = {"train": 1347, "test": 450}


def numbered_dataset(size: int) -> Dataset:
    """A toy data set whose label is the example's index and whose image is filled with index / size."""
    images = np.broadcast_to(np.arange(size, dtype=np.float32)[:, None, None, None] / size, (size, 28, 28, 1))
    return Dataset("numbered", "train", images.copy(), np.arange(size, dtype=np.int32), "made in the test")


def image_keys(dataset: Dataset) -> set[bytes]:
    return {image.tobytes() for image in dataset.images}


# --- the offline digits ---


@pytest.mark.parametrize("split", ["train", "test"])
def test_digits_are_28x28_float32_in_unit_range_with_every_class(split):
    dataset = digits(split)
    assert len(dataset) == SPLIT_SIZES[split]
    assert dataset.images.shape == (SPLIT_SIZES[split], 28, 28, 1) and dataset.images.dtype == np.float32
    assert dataset.labels.shape == (SPLIT_SIZES[split],) and dataset.labels.dtype == np.int32
    assert dataset.images.min() == 0.0 and dataset.images.max() == 1.0
    assert set(dataset.labels.tolist()) == set(range(10))
    assert dataset.name == DIGITS_NAME and "MNIST" not in dataset.name and "scikit-learn" in dataset.source


def test_digits_leave_mnists_four_pixel_margin_empty():
    images = digits("test").images[..., 0]
    assert not images[:, :4].any() and not images[:, -4:].any()
    assert not images[:, :, :4].any() and not images[:, :, -4:].any()


def test_digits_split_is_deterministic_and_seed_only_reorders_it():
    first, again, reordered = digits("train", seed=0), digits("train", seed=0), digits("train", seed=1)
    np.testing.assert_array_equal(first.images, again.images)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert image_keys(first) == image_keys(reordered)
    assert not np.array_equal(first.labels, reordered.labels)


@pytest.mark.parametrize("seed", [0, 3])
def test_digits_train_and_test_share_no_image(seed):
    train, test = image_keys(digits("train", seed=seed)), image_keys(digits("test", seed=seed))
    assert len(train) == SPLIT_SIZES["train"] and len(test) == SPLIT_SIZES["test"]
    assert not train & test


def test_digits_test_split_is_stratified():
    counts = np.bincount(digits("test").labels, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46


def test_limit_takes_the_first_examples_after_the_seeded_shuffle():
    full, limited = digits("train", seed=2), load("digits", "train", seed=2, limit=25)
    assert len(limited) == 25
    np.testing.assert_array_equal(limited.images, full.images[:25])
    np.testing.assert_array_equal(limited.labels, full.labels[:25])


def test_load_digits_matches_digits():
    np.testing.assert_array_equal(load().labels, digits().labels)


# --- batches ---


def test_batches_visit_every_example_once_per_epoch():
    dataset = numbered_dataset(23)
    seen = np.concatenate([labels for _, labels in batches(dataset, 5, seed=1)])
    assert sorted(seen.tolist()) == list(range(23))
    assert seen.tolist() != list(range(23))  # shuffled


def test_batches_pair_each_image_with_its_label():
    for images, labels in batches(numbered_dataset(23), 5):
        np.testing.assert_array_equal(images[:, 0, 0, 0], labels.astype(np.float32) / np.float32(23))


def test_batches_are_seeded():
    def order(seed):
        return np.concatenate([labels for _, labels in batches(numbered_dataset(40), 8, seed=seed)]).tolist()

    assert order(0) == order(0)
    assert order(0) != order(1)


def test_batches_without_shuffle_keep_stored_order_and_drop_last_drops_the_short_batch():
    dataset = numbered_dataset(10)
    assert [labels.tolist() for _, labels in batches(dataset, 4, shuffle=False)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(labels) for _, labels in batches(dataset, 4, drop_last=True)] == [4, 4]


def test_batches_of_real_digits_have_batch_shapes():
    images, labels = next(batches(digits("test"), 32))
    assert images.shape == (32, 28, 28, 1) and labels.shape == (32,)


# --- errors ---


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"'cifar'.*'digits'.*'mnist'"):
        load("cifar")


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_unknown_split_names_it_and_the_choices(name):
    with pytest.raises(ValueError, match=r"'validation'.*'train' or 'test'"):
        load(name, "validation")


@pytest.mark.parametrize("limit", [0, -3, 2.5])
def test_bad_limit_is_named(limit):
    with pytest.raises(ValueError, match=f"got {limit!r}"):
        load("digits", limit=limit)


@pytest.mark.parametrize("batch_size", [0, 2.0])
def test_bad_batch_size_is_named(batch_size):
    with pytest.raises(ValueError, match=f"got {batch_size!r}"):
        next(batches(numbered_dataset(4), batch_size))


def test_dataset_rejects_images_of_the_wrong_shape_or_labels_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"\(2, 8, 8\)"):
        Dataset("toy", "train", np.zeros((2, 8, 8), np.float32), np.zeros(2, np.int32), "zeros")
    with pytest.raises(ValueError, match=r"\(3,\)"):
        Dataset("toy", "train", np.zeros((2, 28, 28, 1), np.float32), np.zeros(3, np.int32), "zeros")


# --- MNIST through tfds.data_source ---


def test_mnist_reads_through_data_source_under_the_tfds_mock(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        full = load("mnist", "test", data_dir=str(tmp_path))
        limited = mnist("train", data_dir=str(tmp_path), limit=5)
    assert len(full) == 12 and len(limited) == 5
    assert limited.images.shape == (5, 28, 28, 1) and limited.images.dtype == np.float32
    assert limited.labels.dtype == np.int32 and set(limited.labels.tolist()) <= set(range(10))
    assert 0.0 <= limited.images.min() and limited.images.max() <= 1.0 and limited.images.max() > 0.5
    assert full.name == "MNIST" and full.split == "test" and str(tmp_path) in full.source


def prepare_fake_mnist(data_dir, sizes):
    """Write MNIST-shaped array_record files with tfds's real MNIST builder and writer, without TensorFlow.

    The builder's two TensorFlow uses (reading the downloaded files with tf.io.gfile and encoding PNGs with
    tf.image) are sidestepped by patching its extraction helpers to return PIL images; the download is
    patched away. Example i of a split is filled with the value i and labelled i % 10.
    """
    tfds = pytest.importorskip("tensorflow_datasets")
    pil_image = pytest.importorskip("PIL.Image")
    from tensorflow_datasets.image_classification import mnist as mnist_builder

    def images(path, count):
        return [pil_image.fromarray(np.full((28, 28), index, np.uint8)) for index in range(count)]

    def labels(path, count):
        return np.arange(count, dtype=np.int64) % 10

    with (
        mock.patch.object(mnist_builder, "_extract_mnist_images", images),
        mock.patch.object(mnist_builder, "_extract_mnist_labels", labels),
        mock.patch.object(mnist_builder, "_TRAIN_EXAMPLES", sizes["train"]),
        mock.patch.object(mnist_builder, "_TEST_EXAMPLES", sizes["test"]),
        mock.patch.object(tfds.download.DownloadManager, "download_and_extract", lambda self, urls: dict(urls)),
    ):
        builder = tfds.builder("mnist", data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return Path(builder.data_dir)


def test_mnist_reads_prepared_array_record_files_without_tensorflow(tmp_path):
    prepare_fake_mnist(tmp_path, {"train": 30, "test": 12})
    test = mnist("test", data_dir=str(tmp_path))
    limited = load("mnist", "train", data_dir=str(tmp_path), limit=7)
    assert len(test) == 12 and len(limited) == 7
    values = np.round(test.images[:, 0, 0, 0] * 255).astype(int)
    np.testing.assert_array_equal(test.images, np.broadcast_to(test.images[:, :1, :1], test.images.shape))
    assert sorted(values.tolist()) == list(range(12))
    np.testing.assert_array_equal(test.labels, values % 10)
    assert "tensorflow" not in sys.modules


def test_mnist_prepared_in_another_file_format_is_unavailable(tmp_path):
    version_dir = prepare_fake_mnist(tmp_path, {"train": 3, "test": 2})
    for record_file in version_dir.glob("*.array_record-*"):
        record_file.rename(record_file.with_name(record_file.name.replace("array_record", "tfrecord")))
    info_file = version_dir / "dataset_info.json"
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "fileFormat": "tfrecord"}))
    with pytest.raises(DataUnavailable, match="no array_record files"):
        mnist("test", data_dir=str(tmp_path))


def test_unprepared_mnist_fails_within_seconds_naming_the_fix(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    start = time.perf_counter()
    with pytest.raises(DataUnavailable) as raised:
        load("mnist", "train", data_dir=str(tmp_path))
    elapsed = time.perf_counter() - start
    assert elapsed < 5, f"an unprepared MNIST took {elapsed:.1f} s to fail; it must not try to download"
    message = str(raised.value)
    assert 'load("digits")' in message and "TFDS_DATA_DIR" in message and "data_dir" in message
    assert str(tmp_path) in message and "prepare_mnist" in message


def test_unprepared_mnist_names_the_folder_from_tfds_data_dir(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "from-env"))
    with pytest.raises(DataUnavailable, match="from-env"):
        mnist("test")


def test_mnist_without_tensorflow_datasets_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(DataUnavailable, match=r'pip install "equivax\[data\]"'):
        mnist("test")


def test_prepare_mnist_without_tensorflow_says_it_needs_tensorflow(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *args: None)
    with pytest.raises(DataUnavailable, match=r"needs TensorFlow.*TFDS_DATA_DIR.*load\(\"digits\"\)"):
        prepare_mnist()
