"""What the command-line tests share: a tiny model registered under a name, image files
(readable, damaged), timm's answers for them, and the one-line error check."""

import dataclasses
import os

import numpy as np

from keras_sequencer import variants
from tests.helpers import TINY_ARCH

# The name the tiny model is registered under (no published weights), its registered
# input size, and timm's evaluation crop.
NAME = "sequencer2d_cli_tiny"
INPUT_SIZE = 28
CROP = 0.875


def register_tiny(monkeypatch, name=NAME, arch=TINY_ARCH, **fields):
    """Registers ``arch`` as the variant ``name`` for this test (a copy of the
    ``sequencer2d_s`` row with ``fields`` replaced, e.g. ``input_size``)."""
    row = dataclasses.replace(variants.VARIANTS["sequencer2d_s"], name=name, arch=dict(arch), weights=None, **fields)
    monkeypatch.setitem(variants.VARIANTS, name, row)


def random_photo(seed, size=(80, 64)):
    """A random RGB PIL image of ``size`` (width, height)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (*size[::-1], 3)).astype("uint8"))


def write_images(folder, names, size=(40, 30)):
    """Writes readable JPEG/PNG files under ``folder``; returns their paths."""
    paths = []
    for seed, name in enumerate(names):
        path = os.path.join(folder, name)
        random_photo(seed, size).save(path)
        paths.append(path)
    return paths


def write_bad_files(folder):
    """``(not an image, truncated JPEG, empty file)`` under ``folder``."""
    not_image = os.path.join(folder, "notimage.jpg")
    with open(not_image, "w") as f:
        f.write("this is text, not a JPEG\n")
    (good,) = write_images(folder, ["source.jpg"], size=(200, 150))
    truncated = os.path.join(folder, "truncated.jpg")
    with open(good, "rb") as f:
        data = f.read()
    os.remove(good)
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 3])  # a valid header, then the data stops
    empty = os.path.join(folder, "empty.png")
    open(empty, "wb").close()
    return not_image, truncated, empty


def timm_logits(torch_model, paths, image_size):
    """timm's logits for image files through timm's own evaluation transform."""
    import torch
    from PIL import Image
    from timm.data import create_transform

    transform = create_transform(
        input_size=(3, image_size, image_size), crop_pct=CROP, interpolation="bicubic", is_training=False
    )
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])
        return torch_model(batch).numpy()


def error_lines(err):
    """The lines of ``err``, each checked to be one of the command's one-line errors."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert all(line.startswith("keras-sequencer ") and ": error: " in line for line in lines), lines
    return lines


def predictions(out):
    """``{image path: [(probability, label), ...]}`` from ``predict``'s output."""
    found, path = {}, None
    for line in out.splitlines():
        if not line.startswith("  "):
            path = line
            found[path] = []
        else:
            score, label = line.split(None, 1)
            found[path].append((float(score), label))
    return found
