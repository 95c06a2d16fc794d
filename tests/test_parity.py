"""Full-size parity: Sequencer2D S/M/L vs timm (random init), fp32, logits and features.

Runs whenever timm is importable (CI installs it). Max |Δlogit| must be <= 1e-4 at
224x224 and at a non-square size.
"""

import numpy as np
import pytest

import keras_sequencer
from keras_sequencer import conversion
from tests.helpers import random_images, requires_timm, run_model, timm_forward, timm_model

pytestmark = [requires_timm, pytest.mark.slow]

BUILDERS = {
    "sequencer2d_s": keras_sequencer.Sequencer2DS,
    "sequencer2d_m": keras_sequencer.Sequencer2DM,
    "sequencer2d_l": keras_sequencer.Sequencer2DL,
}


@pytest.mark.parametrize("variant", sorted(BUILDERS))
def test_full_model_parity_with_timm(variant, record_property):
    import keras

    reference = timm_model(variant=variant, seed=7)
    model = BUILDERS[variant](classifier_activation=None)
    conversion.load_state_dict(model, reference.state_dict())
    logits_and_features = keras.Model(model.inputs, [model.output, model.get_layer("norm").output])
    for size in ((224, 224), (196, 252)):
        images = random_images(1, *size, seed=8)
        expected = timm_forward(reference, images)
        logits, features = run_model(logits_and_features, images)
        delta = float(np.abs(logits - expected).max())
        print(f"{variant} {size}: max |dlogit| = {delta:.3g}")
        record_property(f"max_abs_dlogit_{size[0]}x{size[1]}", delta)
        assert delta <= 1e-4
        assert np.abs(expected).std() > 0.1
        expected_features = timm_forward(reference, images, features=True)
        assert features.shape == expected_features.shape
        assert float(np.abs(features - expected_features).max()) <= 1e-4
