"""keras_sequencer.imagenet: the class table against timm's and ``decode_predictions``."""

import keras
import numpy as np
import pytest

from keras_sequencer import decode_predictions
from keras_sequencer.imagenet import imagenet_classes
from tests.helpers import requires_timm


@requires_timm
def test_class_table_matches_timm():
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    classes = imagenet_classes()
    assert len(classes) == 1000
    for index, (wnid, names) in enumerate(classes):
        assert wnid == info.index_to_label_name(index)
        assert names == info.index_to_description(index)


def test_decode_predictions():
    rng = np.random.RandomState(0)
    preds = rng.uniform(0, 0.1, (2, 1000)).astype("float32")
    preds[0, [7, 3, 999]] = [0.9, 0.8, 0.7]
    preds[1, [0, 500]] = [0.6, 0.95]
    decoded = decode_predictions(preds, top=3)
    classes = imagenet_classes()
    assert [[entry[0] for entry in row] for row in decoded] == [
        [classes[7][0], classes[3][0], classes[999][0]],
        [classes[500][0], classes[0][0], classes[int(np.argsort(-preds[1])[2])][0]],
    ]
    assert decoded[0][0] == (classes[7][0], classes[7][1], pytest.approx(0.9))
    assert all(isinstance(v, str) for v in decoded[0][0][:2]) and isinstance(decoded[0][0][2], float)
    assert len(decode_predictions(keras.ops.convert_to_tensor(preds))[1]) == 5
    with pytest.raises(ValueError, match=r"\(batch, 1000\)"):
        decode_predictions(preds[:, :10])
    with pytest.raises(ValueError, match="top"):
        decode_predictions(preds, top=0)
