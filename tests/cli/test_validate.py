"""``keras-sequencer validate`` (keras_sequencer.evaluation): top-1 / top-5 on folders
whose answers timm computed, unreadable files left out, bad input in one line."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_sequencer import cli
from keras_sequencer.evaluation import image_folder
from keras_sequencer.imagenet import imagenet_classes
from tests.cli.helpers import CROP, NAME, error_lines, random_photo, timm_logits, write_bad_files, write_images
from tests.helpers import quick_first


def test_validate_leaves_out_unreadable_files(tmp_path, capsys, tiny_weights):
    import json

    for wnid in ("n01440764", "n01443537"):
        os.makedirs(tmp_path / "data" / "val" / wnid)
        write_images(str(tmp_path / "data" / "val" / wnid), ["a.JPEG", "b.png"])
    not_image, truncated, empty = write_bad_files(str(tmp_path / "data" / "val" / "n01440764"))
    results_file = str(tmp_path / "results.json")
    argv = [
        "validate",
        str(tmp_path / "data"),
        "--model",
        NAME,
        "--weights",
        tiny_weights,
        "-b",
        "3",
        "--results-file",
        results_file,
    ]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "(4 images," in captured.out
    errors = error_lines(captured.err)
    assert len(errors) == 4
    assert any(line.endswith(f"{not_image}: not an image file Pillow can read") for line in errors)
    assert any(line.endswith(f"{empty}: not an image file Pillow can read") for line in errors)
    assert any(f"{truncated}: " in line and "truncated" in line for line in errors)
    assert errors[-1] == "keras-sequencer validate: error: 3 of 7 images could not be read"
    with open(results_file) as f:
        results = json.load(f)
    assert results["images"] == 4 and results["input_size"] == [3, 28, 28]
    assert sorted(bad["path"] for bad in results["unreadable"]) == sorted([not_image, truncated, empty])


def _clear(logits, rank, margin=0.05):
    """True when the class at ``rank`` is > ``margin`` away from the logits at the
    top-1 and top-5 boundaries: far above float32 (and float16) differences."""
    order = np.sort(logits)[::-1]
    return all(abs(order[rank] - order[i]) > margin for i in (0, 1, 4, 5) if i < len(order) and i != rank)


def _known_folder(root, torch_model, class_names, image_size, ranks, seed=0):
    """Files generated images under the class at ``ranks[i]`` of timm's ranking.

    Returns the expected (top-1, top-5) accuracy in %.
    """
    pool = os.path.join(root, "pool")
    os.makedirs(pool)
    paths = [os.path.join(pool, f"c{s}.png") for s in range(24)]
    for s, path in enumerate(paths):
        random_photo(seed * 100 + s).save(path)
    placed = 0
    for s, (path, logits) in enumerate(zip(paths, timm_logits(torch_model, paths, image_size))):
        rank = ranks[placed]
        if not _clear(logits, rank):
            continue
        label = int(np.argsort(-logits)[rank])
        folder = os.path.join(root, "val", class_names[label])
        os.makedirs(folder, exist_ok=True)
        # PNG data under a .JPEG name too: files are picked by extension, decoded by content.
        os.replace(path, os.path.join(folder, f"img{placed}.JPEG" if s % 2 else f"img{placed}.png"))
        placed += 1
        if placed == len(ranks):
            shutil.rmtree(pool)
            ranks = np.array(ranks)
            return 100.0 * np.mean(ranks == 0), 100.0 * np.mean(ranks < 5)
    raise AssertionError("not enough images with clear margins")


@pytest.mark.parametrize("amp", quick_first([False, True]))
def test_validate_on_a_folder_with_known_accuracy(tiny, tmp_path, capsys, amp):
    weights, torch_model = tiny()
    wnids = [wnid for wnid, _ in imagenet_classes()]
    top1, top5 = _known_folder(str(tmp_path / "data"), torch_model, wnids, 28, [0, 0, 0, 2, 2, 400])
    assert (top1, top5) == (50.0, pytest.approx(500 / 6))
    results_file = str(tmp_path / "results.json")
    argv = [
        "validate",
        str(tmp_path / "data"),
        "--model",
        NAME,
        "--weights",
        weights,
        "-b",
        "4",  # 4 + 2 (padded)
        "--input-size",
        "3",
        "28",
        "28",
        "--results-file",
        results_file,
    ]
    assert cli.main(argv + (["--amp"] if amp else [])) == 0
    with open(results_file) as f:
        results = json.load(f)
    assert results["images"] == 6
    assert results["top1"] == pytest.approx(top1) and results["top5"] == pytest.approx(top5)
    assert results["top1_err"] == pytest.approx(100 - top1)
    assert results["amp"] is amp and results["images_per_sec"] > 0
    assert results["input_size"] == [3, 28, 28] and results["crop_pct"] == CROP
    out = capsys.readouterr().out
    assert f"top-1 {top1:.3f}  top-5 {top5:.3f}" in out and "images/s" in out
    import keras

    assert keras.config.dtype_policy().name == "float32"  # --amp does not leak


def test_validate_plain_class_folders_use_sorted_order(tiny, tmp_path):
    weights, torch_model = tiny(num_classes=3, seed=11)
    names = ["zebra", "apple", "mango"]  # sorted: apple=0, mango=1, zebra=2
    top1, top5 = _known_folder(str(tmp_path / "d"), torch_model, sorted(names), 28, [0, 0, 2, 1], seed=1)
    assert top1 == 50.0
    data_dir = str(tmp_path / "d" / "val")  # DATA_DIR holding the class folders directly
    samples, class_names = image_folder(data_dir)
    assert class_names == sorted(os.listdir(data_dir))
    results_file = str(tmp_path / "r.json")
    assert (
        cli.main(
            [
                "validate",
                data_dir,
                "--model",
                NAME,
                "--weights",
                weights,
                "--num-classes",
                "3",
                "--input-size",
                "3",
                "28",
                "28",
                "--results-file",
                results_file,
            ]
        )
        == 0
    )
    with open(results_file) as f:
        results = json.load(f)
    assert results["top1"] == pytest.approx(top1)
    assert results["top5"] == 100.0  # 3 classes: always in the top 5


def test_validate_rejects_bad_input(tiny, tmp_path):
    weights, _ = tiny()
    with pytest.raises(ValueError, match="no class folders"):
        image_folder(str(tmp_path))
    os.makedirs(tmp_path / "val" / "n01440764")
    with pytest.raises(ValueError, match="No images"):
        image_folder(str(tmp_path))
    # --debug: the error itself instead of its one-line report (tests/cli/test_main.py)
    with pytest.raises(ValueError, match="3 channels"):
        cli.main(
            [
                "--debug",
                "validate",
                str(tmp_path),
                "--model",
                NAME,
                "--weights",
                weights,
                "--input-size",
                "1",
                "56",
                "56",
            ]
        )
    with pytest.raises(ValueError, match="Unknown model"):
        cli.main(["--debug", "predict", "x.png", "--model", "sequencer2d_xl", "--weights", weights])
