"""``keras-sequencer predict`` and ``validate`` against answers computed with timm.

A tiny architecture is registered under a model name (monkeypatched into
the variant table) and given random timm weights; timm's own model and eval
transform give the reference rankings, from which image folders with a known
top-1 / top-5 accuracy are built.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from keras_sequencer import cli, variants
from keras_sequencer.imagenet import imagenet_classes
from keras_sequencer.validation import image_folder
from tests.helpers import TINY_ARCH, requires_timm, state_dict_numpy, timm_model

pytestmark = requires_timm
NAME = "sequencer2d_tiny"
CROP = 0.875


def _image(seed, size=(80, 64)):
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (*size[::-1], 3)).astype("uint8"))


def _timm_logits(torch_model, paths, image_size):
    import torch
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(
        input_size=(3, image_size, image_size), crop_pct=CROP, interpolation="bicubic", is_training=False
    )
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        return torch_model(batch).numpy()


def register_tiny(monkeypatch, name=NAME, arch=TINY_ARCH):
    """Registers ``arch`` as variant ``name`` (no published weights) for this test."""
    tiny_variant = dataclasses.replace(variants.VARIANTS["sequencer2d_s"], name=name, arch=dict(arch), weights=None)
    monkeypatch.setitem(variants.VARIANTS, name, tiny_variant)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """(checkpoint path, timm model) of the tiny model registered as ``sequencer2d_tiny``."""
    from safetensors.numpy import save_file

    register_tiny(monkeypatch)

    def make(num_classes=1000, seed=7):
        torch_model = timm_model(TINY_ARCH, num_classes=num_classes, seed=seed)
        path = str(tmp_path / f"tiny{num_classes}.safetensors")
        save_file(state_dict_numpy(torch_model), path)
        return path, torch_model

    return make


def test_predict_prints_timm_top5(tiny, tmp_path, capsys):
    weights, torch_model = tiny()
    paths = []
    for seed in range(2):
        paths.append(str(tmp_path / f"img{seed}.jpg"))
        _image(seed, (300, 240)).save(paths[-1], quality=95)
    assert cli.main(["predict", *paths, "--model", NAME, "--weights", weights]) == 0
    lines = capsys.readouterr().out.splitlines()
    logits = _timm_logits(torch_model, paths, 224).astype("float64")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    classes = imagenet_classes()
    assert len(lines) == 2 * 6
    for i, path in enumerate(paths):
        block = lines[6 * i : 6 * i + 6]
        assert block[0] == path
        top5 = np.argsort(-probs[i])[:5]
        for line, index in zip(block[1:], top5):
            score, wnid, names = line.split(None, 2)
            assert (wnid, names) == classes[index]
            assert float(score) == pytest.approx(probs[i, index], abs=1e-4)


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
        _image(seed * 100 + s).save(path)
    placed = 0
    for s, (path, logits) in enumerate(zip(paths, _timm_logits(torch_model, paths, image_size))):
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


@pytest.mark.parametrize("amp", [False, True])
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
    # --debug: the error itself instead of its one-line report (tests/test_cli.py)
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
