"""``keras-sequencer predict``: timm's top-5 on real files, unreadable files named and
skipped, ``--debug``."""

import numpy as np
import pytest

from keras_sequencer import cli
from keras_sequencer.imagenet import imagenet_classes
from tests.cli.helpers import NAME, error_lines, random_photo, timm_logits, write_bad_files, write_images


@pytest.mark.slow
def test_predict_classifies_every_readable_file_and_names_the_others(tmp_path, capsys, tiny_weights):
    good = write_images(str(tmp_path), ["good.jpg", "good2.png", "gray.png"])
    from PIL import Image

    Image.open(good[2]).convert("L").save(good[2])  # grayscale: read as RGB, not an error
    not_image, truncated, empty = write_bad_files(str(tmp_path))
    missing = str(tmp_path / "missing.jpg")
    argv = [
        "predict",
        good[0],
        not_image,
        truncated,
        good[1],
        empty,
        missing,
        good[2],
        "--model",
        NAME,
        "--weights",
        tiny_weights,
        "--top",
        "2",
        "-b",
        "2",
    ]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert [line for line in out if not line.startswith("  ")] == good  # each good file, in order
    assert len(out) == 3 * 3
    errors = error_lines(captured.err)
    assert len(errors) == 5
    by_file = {path: line for path in (not_image, truncated, empty, missing) for line in errors if f" {path}: " in line}
    assert by_file[not_image].endswith(f"{not_image}: not an image file Pillow can read")
    assert by_file[empty].endswith(f"{empty}: not an image file Pillow can read")
    assert by_file[missing].endswith(f"{missing}: no such file")
    assert "truncated" in by_file[truncated].split(f"{truncated}: ")[1]
    assert errors[-1] == "keras-sequencer predict: error: 4 of 7 images could not be read"


def test_predict_with_no_readable_file_builds_no_model(tmp_path, capsys, no_model):
    not_image, _, empty = write_bad_files(str(tmp_path))
    assert cli.main(["predict", not_image, empty]) == 1
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 3 and errors[-1].endswith("2 of 2 images could not be read")


def test_predict_debug_raises_on_a_bad_file(tmp_path, tiny_weights):
    from PIL import UnidentifiedImageError

    not_image, truncated, _ = write_bad_files(str(tmp_path))
    with pytest.raises(OSError, match="truncated"):
        cli.main(["--debug", "predict", truncated, "--model", NAME, "--weights", tiny_weights])
    with pytest.raises(UnidentifiedImageError):
        cli.main(["--debug", "predict", not_image, "--model", NAME, "--weights", tiny_weights])


def test_predict_prints_timm_top5(tiny, tmp_path, capsys):
    weights, torch_model = tiny()
    paths = []
    for seed in range(2):
        paths.append(str(tmp_path / f"img{seed}.jpg"))
        random_photo(seed, (300, 240)).save(paths[-1], quality=95)
    assert cli.main(["predict", *paths, "--model", NAME, "--weights", weights]) == 0
    lines = capsys.readouterr().out.splitlines()
    logits = timm_logits(torch_model, paths, 224).astype("float64")
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
