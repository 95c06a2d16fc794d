"""keras_sequencer.training.augment: the ``--aa`` string and random erasing (``--remode``)
against timm's ``RandomErasing`` on the same draws."""

import math

import numpy as np
import pytest

from keras_sequencer.training import transforms
from tests.helpers import Draws, patched, to_numpy

tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
timm_erasing = pytest.importorskip("timm.data.random_erasing")


# ---------------------------------------------------------------- random erasing
@pytest.mark.parametrize("count", [1, 3])
def test_erase_boxes_equal_timm_random_erasing_on_the_same_draws(count, monkeypatch):
    rng = np.random.RandomState(count)
    height, width = 24, 20
    log_aspect = (math.log(0.3), math.log(1 / 0.3))
    eraser = timm_erasing.RandomErasing(1.0, mode="const", max_count=count, device="cpu")
    erase_boxes = tf.function(transforms.erase_boxes_from_draws)
    for trial in range(15):
        n = int(rng.randint(1, count + 1))
        areas = rng.uniform(0.02, 1 / 3, (count, 10))
        if trial % 5 == 0:
            areas[:] = 0.95  # no attempt fits: nothing erased
        logs = rng.uniform(*log_aspect, (count, 10))
        offsets = rng.uniform(size=(count, 2))
        boxes = to_numpy(erase_boxes(height, width, areas, logs, offsets, tf.constant(n)))
        sequence = [0.0] + ([(n - 1 + 0.5) / count] if count > 1 else [])
        for k in range(n):
            for attempt in range(10):
                sequence += [areas[k, attempt], logs[k, attempt]]
                h = round(math.sqrt(areas[k, attempt] * height * width / n * math.exp(logs[k, attempt])))
                w = round(math.sqrt(areas[k, attempt] * height * width / n / math.exp(logs[k, attempt])))
                if w < width and h < height:
                    sequence += list(offsets[k])
                    break
        patched(timm_erasing, "random", Draws(sequence), monkeypatch)
        reference = torch.ones(3, height, width)
        eraser(reference)
        ours = to_numpy(transforms.erase_with_boxes(tf.ones((height, width, 3)), boxes, tf.zeros((count, 1, 1, 3))))
        np.testing.assert_array_equal(ours, reference.permute(1, 2, 0).numpy())


def test_random_erasing_modes_and_probability():
    tf.random.set_seed(1)
    image = tf.fill((32, 32, 3), 5.0)
    for mode in ("pixel", "rand", "const"):
        erase = tf.function(lambda _: transforms.random_erasing(image, 1.0, mode))  # noqa: B023
        erased = to_numpy(tf.map_fn(erase, tf.range(8), fn_output_signature=tf.float32))
        mask = (erased != 5.0).any(-1)
        assert mask.any(axis=(1, 2)).mean() > 0.5  # most images erased (some draws fit nowhere)
        area = mask.mean((1, 2))[mask.any(axis=(1, 2))]
        assert ((area >= 0.015) & (area <= 0.34)).all()
        values = erased[mask]
        if mode == "const":
            assert (values == 0).all()
        elif mode == "rand":  # one N(0, 1) colour per box
            first = erased[np.argmax(mask.any(axis=(1, 2)))]
            colours = np.unique(first[(first != 5.0).any(-1)], axis=0)
            assert len(colours) == 1
        else:
            assert abs(values.std() - 1.0) < 0.2 and abs(values.mean()) < 0.2
    kept = [to_numpy(transforms.random_erasing(image, 0.0, "pixel")) for _ in range(4)]
    assert all((k == 5.0).all() for k in kept)
