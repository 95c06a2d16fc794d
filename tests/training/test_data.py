"""ImageNet-style folders and in-memory arrays as training data (keras_sequencer.training.data)."""

import os

import numpy as np
import pytest
from PIL import Image

from keras_sequencer.training import data
from tests.helpers import make_image_folder, truncate_into_jpeg


def test_image_folder_reads_every_image_with_its_class(tmp_path):
    written = make_image_folder(str(tmp_path), per_class=3)
    splits = data.load_image_folder(str(tmp_path))
    assert splits.class_names == ["cat", "dog"]
    assert (splits.train_size, splits.val_size, splits.num_classes) == (6, 6, 2)
    val = list(splits.val.as_numpy_iterator())
    assert [label for _, label in val] == [0, 0, 0, 1, 1, 1]
    expected = [written[os.path.join(str(tmp_path), "val", c, f"{i}.png")] for c in ("cat", "dog") for i in range(3)]
    for (image, _), pixels in zip(val, expected):
        assert image.dtype == np.uint8
        np.testing.assert_array_equal(image, pixels)
    train_labels = sorted(int(label) for _, label in splits.train.as_numpy_iterator())
    assert train_labels == [0, 0, 0, 1, 1, 1]


def test_validation_folder_may_be_called_validation(tmp_path):
    make_image_folder(str(tmp_path))
    os.rename(tmp_path / "val", tmp_path / "validation")
    assert data.load_image_folder(str(tmp_path)).val_size == 4


def test_missing_split_folder_is_named(tmp_path):
    make_image_folder(str(tmp_path))
    os.rename(tmp_path / "val", tmp_path / "valid")
    with pytest.raises(ValueError, match=f"{tmp_path} has no 'val' or 'validation' folder"):
        data.load_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match="does not exist"):
        data.load_image_folder(str(tmp_path / "nowhere"))


def test_class_folder_without_images_is_named(tmp_path):
    make_image_folder(str(tmp_path))
    empty = tmp_path / "train" / "eel"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (tmp_path / "val" / "eel").mkdir()
    with pytest.raises(ValueError, match=f"{empty} has no images"):
        data.load_image_folder(str(tmp_path))


def test_split_without_class_folders_is_named(tmp_path):
    make_image_folder(str(tmp_path))
    for path in (tmp_path / "val").rglob("*.png"):
        path.unlink()
    for path in sorted((tmp_path / "val").iterdir()):
        path.rmdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'val'} has no class folders"):
        data.load_image_folder(str(tmp_path))


def test_inconsistent_class_folders_are_named(tmp_path):
    make_image_folder(str(tmp_path), classes=("cat", "dog"), val_classes=("cat", "emu"))
    with pytest.raises(ValueError) as error:
        data.load_image_folder(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert "only in train: ['dog']" in message and "only in val: ['emu']" in message


@pytest.mark.parametrize("content", [b"this is not a jpeg at all", b""])
def test_unreadable_image_is_named(tmp_path, content):
    make_image_folder(str(tmp_path))
    broken = tmp_path / "val" / "dog" / "broken.jpg"
    broken.write_bytes(content)
    with pytest.raises(ValueError, match=f"{broken} is not a readable image"):
        data.load_image_folder(str(tmp_path))


def test_find_undecodable_names_a_truncated_jpeg(tmp_path):
    make_image_folder(str(tmp_path))
    truncated = tmp_path / "train" / "dog" / "truncated.jpg"
    truncate_into_jpeg(truncated)
    splits = data.load_image_folder(str(tmp_path))  # the header check passes it
    assert str(truncated) in splits.files and len(splits.files) == 9
    import tensorflow as tf

    with pytest.raises(tf.errors.InvalidArgumentError):  # tf.data's decode error, which does not name the file
        list(splits.train.as_numpy_iterator())
    assert data.find_undecodable(splits.files) == [str(truncated)]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without permission")
def test_image_without_read_permission_is_named(tmp_path):
    make_image_folder(str(tmp_path))
    locked = tmp_path / "train" / "cat" / "0.png"
    locked.chmod(0)
    try:
        with pytest.raises(ValueError, match=f"Cannot read image {locked}"):
            data.load_image_folder(str(tmp_path))
    finally:
        locked.chmod(0o644)


def test_unknown_dataset_kind_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="Unsupported --dataset 'hf/cifar10'"):
        data.load(str(tmp_path), "hf/cifar10")


def test_from_arrays_checks_shapes():
    images = np.zeros((4, 8, 8, 3), np.uint8)
    splits = data.from_arrays((images, [0, 1, 2, 1]), (images[:2], [0, 2]))
    assert splits.class_names == ["0", "1", "2"] and splits.train_size == 4
    with pytest.raises(ValueError, match=r"val images must be \(N, H, W, 3\)"):
        data.from_arrays((images, [0, 1, 2, 1]), (images[:2, ..., :1], [0, 2]))


def test_folder_images_are_the_packages_extensions(tmp_path):
    from keras_sequencer.preprocessing import IMAGE_EXTENSIONS

    assert data.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS  # one list for train and validate
    make_image_folder(str(tmp_path))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")  # ignored
    assert data.load_image_folder(str(tmp_path)).train_size == 4


def test_webp_tiff_and_ppm_are_decoded_with_pillow(tmp_path):
    """Formats tf.io cannot decode come through Pillow, pixel for pixel; a 16-bit
    grayscale TIFF is scaled to 8 bits."""
    make_image_folder(str(tmp_path), per_class=1)
    rng = np.random.RandomState(3)
    rgb = rng.randint(0, 256, (9, 7, 3), dtype=np.uint8)
    wide = rng.randint(0, 65536, (5, 6)).astype(np.uint16)
    Image.fromarray(rgb).save(tmp_path / "val" / "cat" / "a.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "val" / "cat" / "b.tiff")
    Image.fromarray(rgb).save(tmp_path / "val" / "dog" / "c.ppm")
    Image.fromarray(wide).save(tmp_path / "val" / "dog" / "d.tif")
    splits = data.load_image_folder(str(tmp_path))
    assert splits.val_size == 6
    decoded = dict(
        zip(sorted(p for p in splits.files if "/val/" in p), (image for image, _ in splits.val.as_numpy_iterator()))
    )
    for name in ("cat/a.webp", "cat/b.tiff", "dog/c.ppm"):
        np.testing.assert_array_equal(decoded[str(tmp_path / "val" / name)], rgb, err_msg=name)
    expected = np.repeat(np.round(wide / 257.0).astype(np.uint8)[..., None], 3, -1)
    np.testing.assert_array_equal(decoded[str(tmp_path / "val" / "dog" / "d.tif")], expected)
    assert data.find_undecodable(splits.files) == []


def test_find_undecodable_names_a_truncated_webp(tmp_path):
    make_image_folder(str(tmp_path))
    broken = tmp_path / "train" / "cat" / "broken.webp"
    Image.fromarray(np.random.RandomState(0).randint(0, 256, (30, 30, 3), dtype=np.uint8)).save(broken, lossless=True)
    broken.write_bytes(broken.read_bytes()[:600])
    splits = data.load_image_folder(str(tmp_path))
    assert data.find_undecodable(splits.files) == [str(broken)]
