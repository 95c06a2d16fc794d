"""keras_sequencer.schedules: the recipe's cosine schedule (warmup, cooldown, per epoch or
per update) against timm's scheduler, and a checkpoint that holds it loading with the
package alone."""

import math
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

from keras_sequencer import training
from tests.helpers import REPO, tiny_config


def test_learning_rate_schedule_changes_per_epoch_warms_up_and_cools_down():
    config = tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10)
    schedule = training.learning_rate_schedule(config, steps_per_epoch=5)
    rate = lambda sched, step: float(keras.ops.convert_to_numpy(sched(step)))  # noqa: E731
    cosine = lambda t: 1e-5 + (1e-2 - 1e-5) * 0.5 * (1 + math.cos(math.pi * t))  # noqa: E731
    warm = 1e-4 + (1e-2 - 1e-4) / 2
    # epoch e = steps 5e .. 5e+4 share one rate; the cosine counts from epoch 0
    expected = {
        0: 1e-4,
        4: 1e-4,
        5: warm,
        9: warm,
        10: cosine(0.2),
        14: cosine(0.2),
        25: cosine(0.5),
        49: cosine(0.9),
        50: 1e-5,
        70: 1e-5,
    }
    for step, value in expected.items():
        assert rate(schedule, step) == pytest.approx(value, rel=1e-4), step
    per_update = training.learning_rate_schedule(
        tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10, sched_on_updates=True),
        steps_per_epoch=5,
    )
    expected = {0: 1e-4, 3: 1e-4 + 3 * (1e-2 - 1e-4) / 10, 10: cosine(0.2), 11: cosine(0.22), 25: cosine(0.5), 50: 1e-5}
    for step, value in expected.items():
        assert rate(per_update, step) == pytest.approx(value, rel=1e-4), step
    no_warmup = training.learning_rate_schedule(tiny_config("unused", lr=1e-2, warmup_epochs=0), 5)
    assert rate(no_warmup, 0) == pytest.approx(1e-2)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(per_update))
    assert [rate(again, s) for s in (0, 3, 11, 60)] == [rate(per_update, s) for s in (0, 3, 11, 60)]


@pytest.mark.slow
def test_a_checkpoint_with_the_schedule_loads_with_only_the_package_imported(tmp_path):
    """``best.keras`` keeps the optimizer and its schedule; loading it needs no
    import of the training modules (a fresh process imports ``keras_sequencer`` only)."""
    config = tiny_config("unused", lr=1e-2, warmup_lr=1e-4, min_lr=1e-5, warmup_epochs=2, epochs=10)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=training.build_optimizer(config, model, steps_per_epoch=5), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "best.keras")
    script = (
        "import sys, keras, keras_sequencer\n"
        "m = keras.saving.load_model(sys.argv[1])\n"
        "s = m.optimizer._learning_rate\n"
        "print(type(s).__name__, int(m.optimizer.iterations), float(keras.ops.convert_to_numpy(s(12))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "best.keras")],
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, iterations, rate = proc.stdout.split()[-3:]
    assert (name, int(iterations)) == ("TimmCosineSchedule", 1)
    expected = float(keras.ops.convert_to_numpy(training.learning_rate_schedule(config, 5)(12)))
    assert float(rate) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------- learning-rate schedule
@pytest.mark.parametrize("on_updates", [False, True])
def test_learning_rate_schedule_matches_timms_cosine_scheduler(on_updates):
    """timm's ``CosineLRScheduler`` as its ``train.py`` drives it: set at
    construction, then ``step(epoch + 1)`` after each epoch, or
    ``step_update(updates)`` after each update (``--sched-on-updates``, with
    ``t_initial`` and ``warmup_t`` in updates)."""
    torch = pytest.importorskip("torch")
    cosine_lr = pytest.importorskip("timm.scheduler.cosine_lr")
    epochs, warmup, cooldown, steps = 6, 2, 2, 3
    config = types.SimpleNamespace(
        lr=2e-3, min_lr=1e-5, warmup_lr=1e-6, epochs=epochs, warmup_epochs=warmup, sched_on_updates=on_updates
    )
    ours = training.learning_rate_schedule(config, steps_per_epoch=steps)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scale = steps if on_updates else 1
    scheduler = cosine_lr.CosineLRScheduler(
        optimizer,
        t_initial=epochs * scale,
        lr_min=config.min_lr,
        warmup_lr_init=config.warmup_lr,
        warmup_t=warmup * scale,
        t_in_epochs=not on_updates,
    )
    theirs, update = [], 0
    for epoch in range(epochs + cooldown):
        for _ in range(steps):
            theirs.append(optimizer.param_groups[0]["lr"])
            update += 1
            scheduler.step_update(update)
        scheduler.step(epoch + 1)
    values = [float(keras.ops.convert_to_numpy(ours(step))) for step in range(len(theirs))]
    np.testing.assert_allclose(values, theirs, rtol=1e-5)
    assert len(set(np.round(values, 12))) > (epochs + 1 if on_updates else 5)
