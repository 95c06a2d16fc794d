"""keras_sequencer.training.mix: MixUp / CutMix with smoothed targets against timm's
``Mixup`` on the same random draws, and the draws' distributions."""

import types

import keras
import numpy as np
import pytest

from keras_sequencer.training import mix, xla
from tests.helpers import Draws, patched, to_numpy

scipy_stats = pytest.importorskip("scipy.stats")
tf = pytest.importorskip("tensorflow")
torch = pytest.importorskip("torch")
timm_mixup = pytest.importorskip("timm.data.mixup")


# ---------------------------------------------------------------- MixUp / CutMix
@pytest.mark.parametrize(
    "mixup_alpha, cutmix_alpha, switch, lam, centre",
    [
        (0.8, 1.0, 0.2, 0.37, (3, 11)),  # CutMix chosen
        (0.8, 1.0, 0.9, 0.37, (3, 11)),  # MixUp chosen
        (0.0, 1.0, None, 0.6, (0, 15)),  # CutMix only, box clipped at the corner
        (0.8, 0.0, None, 0.71, None),  # MixUp only
    ],
)
def test_mix_equals_timm_mixup_on_the_same_draws(mixup_alpha, cutmix_alpha, switch, lam, centre, monkeypatch):
    batch, height, width, classes, smoothing = 6, 12, 16, 5, 0.1
    images = np.random.RandomState(0).normal(size=(batch, height, width, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 1])
    sequence = [0.0] + ([switch] if switch is not None else []) + [lam]
    use_cutmix = cutmix_alpha > 0 and (switch is None or switch < 0.5)
    if use_cutmix:
        sequence += [(centre[0] + 0.5) / height, (centre[1] + 0.5) / width]
    patched(timm_mixup, "np", Draws(sequence, numpy_style=True), monkeypatch)
    mixer = timm_mixup.Mixup(
        mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, label_smoothing=smoothing, num_classes=classes
    )
    x = torch.tensor(images.transpose(0, 3, 1, 2).copy())
    x, target = mixer(x, torch.tensor(labels))
    centres = np.tile([(c + 0.5) / s for c, s in zip(centre or (0, 0), (height, width))], (batch, 1))
    ours, mixed = mix.mix_batch(
        images, tf.one_hot(labels, classes), np.full(batch, lam, "float32"), np.full(batch, use_cutmix), centres
    )
    np.testing.assert_allclose(to_numpy(ours), x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(to_numpy(mix.smoothed_targets(mixed, smoothing)), target.numpy(), atol=1e-6)
    # Keras's label smoothing on the mixed one-hot targets is timm's soft-target loss.
    logits = np.random.RandomState(1).normal(size=(batch, classes)).astype("float32")
    keras_loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
    timm_loss = pytest.importorskip("timm.loss").SoftTargetCrossEntropy()
    expected = float(timm_loss(torch.tensor(logits), target))
    assert float(to_numpy(keras_loss(to_numpy(mixed), logits))) == pytest.approx(expected, rel=1e-5)


def test_elem_mode_equals_timm_per_image(monkeypatch):
    batch, height, width, classes = 4, 10, 10, 3
    images = np.random.RandomState(2).normal(size=(batch, height, width, 3)).astype("float32")
    labels = np.array([0, 1, 2, 1])
    use_cutmix = np.array([True, False, True, False])
    lam = np.array([0.3, 0.6, 0.8, 0.45], "float32")
    centres = np.array([[2, 7], [0, 0], [9, 1], [0, 0]])
    fake = types.SimpleNamespace(
        rand=lambda n: np.where(use_cutmix, 0.1, 0.9) if len(fake.calls) == 0 else np.zeros(n),
        beta=lambda a, b, size: lam.astype("float64"),
        randint=lambda low, high, size=None: int(fake.centres.pop(0)),
        calls=[],
        centres=[c for i in range(batch) if use_cutmix[i] for c in centres[i]],
    )
    original_rand = fake.rand

    def rand(n):
        value = original_rand(n)
        fake.calls.append(n)
        return value

    fake.rand = rand
    patched(timm_mixup, "np", fake, monkeypatch)
    mixer = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.0, num_classes=classes)
    x, target = mixer(torch.tensor(images.transpose(0, 3, 1, 2).copy()), torch.tensor(labels))
    ours, mixed = mix.mix_batch(
        images, tf.one_hot(labels, classes), lam, use_cutmix, (centres + 0.5) / np.array([height, width])
    )
    np.testing.assert_allclose(to_numpy(ours), x.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(to_numpy(mixed), target.numpy(), atol=1e-6)
    # The pipeline's mixer runs mix_batch compiled by XLA: the same numbers up to
    # float32's last bit (XLA may fuse a multiply and an add).
    draws = (lam, use_cutmix, ((centres + 0.5) / np.array([height, width])).astype("float32"))
    compiled = xla.compiled(mix.mix_batch)(images, tf.one_hot(labels, classes), *draws)
    for eager, fused in zip((ours, mixed), compiled):
        np.testing.assert_allclose(to_numpy(fused), to_numpy(eager), rtol=1e-6, atol=1e-6)


def test_mix_draws_follow_timm_distributions():
    tf.random.set_seed(3)
    sample = tf.function(lambda _: mix.sample_mix_params(4, 0.8, 1.0, prob=1.0, switch_prob=0.5)[:2])
    lams, cuts = (to_numpy(t) for t in tf.map_fn(sample, tf.range(400), fn_output_signature=(tf.float32, tf.bool)))
    assert (lams == lams[:, :1]).all() and (cuts == cuts[:, :1]).all()  # one draw per batch
    lam, cut = lams[:, 0], cuts[:, 0]
    assert 0.4 < cut.mean() < 0.6
    assert scipy_stats.kstest(lam[cut], scipy_stats.beta(1.0, 1.0).cdf).pvalue > 0.01
    assert scipy_stats.kstest(lam[~cut], scipy_stats.beta(0.8, 0.8).cdf).pvalue > 0.01
    none = mix.sample_mix_params(64, 0.8, 0.0, prob=0.0, mode="elem")
    assert (to_numpy(none[0]) == 1.0).all()
