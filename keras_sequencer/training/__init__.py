"""Training Sequencer2D with ``model.fit``: the official (timm) recipe in Keras.

The pieces map onto maintained Keras / TensorFlow components:

======================================  ===============================================
timm (official repo)                    here
======================================  ===============================================
``--opt adamw``, ``--weight-decay``     ``keras.optimizers.AdamW``; 1-D weights (biases,
                                        norms) excluded from decay, as timm does
``--sched cosine`` + warmup/cooldown    ``keras.optimizers.schedules.CosineDecay`` with
                                        ``warmup_target`` (per step; holds ``min_lr``
                                        through the cooldown epochs)
``--clip-grad``                         ``global_clipnorm``
``--smoothing``                         ``CategoricalCrossentropy(label_smoothing=...)``
``--mixup`` / ``--cutmix`` /            timm's ``Mixup`` as ``tf`` ops (:mod:`~.mix`):
``--mixup-prob`` / ``--mixup-switch-    one Beta(alpha, alpha) lam per batch, CutMix
prob`` / ``--mixup-mode``               lam corrected by its box, mirrored partner
``--aa rand-m9-...``                    timm's RandAugment as ``tf`` ops per image
``--color-jitter`` (without ``--aa``)   torchvision's ``ColorJitter`` (:mod:`~.transforms`)
``--reprob`` / ``--remode`` /           timm's ``RandomErasing`` per normalised image
``--recount``                           (:mod:`~.transforms`)
random resized crop                     timm's crop sampler (log-uniform ratio, centre-
                                        crop fallback) (:mod:`~.transforms`)
flip, crop-pct                          ``tf.image`` ops in the ``tf.data`` pipeline
``--native-amp`` / ``--amp``            ``mixed_float16`` policy (loss scaling by Keras)
``--drop-path``                         the model's ``drop_path_rate``: the last
                                        block's, 0 -> rate over the blocks (original)
from scratch                            built with ``initialization="original"``
                                        (:mod:`keras_sequencer.initializers`)
``--pretrained``                        ``weights="imagenet"``
======================================  ===============================================

Written here: the mapping itself, timm's augmentations as ``tf`` ops, the
``--aa`` string parser, the non-finite-loss stop with a message and the
training-curve PNG. The input pipeline is ``tf.data``, which ``fit`` accepts on
every backend. :mod:`~.distribute` spreads the work over devices.

Modules, by concern: :mod:`~.config` (``TrainConfig``, the transfer recipe,
command-line flags -> config), :mod:`~.data` (image folders, TFDS, arrays),
:mod:`~.distribute` (devices and workers), :mod:`~.augment` (``--aa`` / ``--remode``),
:mod:`~.pipeline` (``tf.data``), :mod:`~.transforms` (crop, colour jitter,
erasing), :mod:`~.mix` (MixUp / CutMix), :mod:`~.optim` (AdamW and the schedule),
:mod:`~.callbacks` (NaN stop, history, curves, checkpoints), :mod:`~.loop`
(``build_model``, ``fit``, ``run``). Every public name is importable from
``keras_sequencer.training``.
"""

import importlib

# Every public name -> the module that defines it. They are imported on first use,
# so the command line reads the flags' defaults (``config``) without Keras or TensorFlow.
_NAMES = {
    "augment": ("REMODES", "parse_auto_augment"),
    "callbacks": (
        "NonFiniteLossError",
        "StopOnNonFiniteLoss",
        "TrainingCurves",
        "make_callbacks",
        "plot_history",
        "read_history",
    ),
    "config": (
        "DEFAULT_WARMUP_EPOCHS",
        "INITIALIZATIONS",
        "INTERPOLATIONS",
        "TRANSFER_RECIPE",
        "TrainConfig",
        "capped_warmup",
        "config_from_args",
        "model_input_size",
        "model_names",
    ),
    "loop": ("build_model", "check_requirements", "clear_run", "finished_epochs", "fit", "fit_batch_to_data", "run"),
    "mix": ("MIXUP_MODES", "make_mixer", "mix_batch", "sample_mix_params"),
    "optim": ("build_optimizer", "learning_rate_schedule"),
    "pipeline": ("eval_pipeline", "train_pipeline"),
    "transforms": ("ERASE_MODES",),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
_SUBMODULES = (*_NAMES, "backup", "data", "distribute", "randaugment")


def __getattr__(name):
    if name in _MODULE_OF:
        module = importlib.import_module(f"{__name__}.{_MODULE_OF[name]}")
        value = getattr(module, "MODES" if name == "MIXUP_MODES" else name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *__all__})


__all__ = [
    "DEFAULT_WARMUP_EPOCHS",
    "ERASE_MODES",
    "INITIALIZATIONS",
    "INTERPOLATIONS",
    "MIXUP_MODES",
    "REMODES",
    "TRANSFER_RECIPE",
    "NonFiniteLossError",
    "StopOnNonFiniteLoss",
    "TrainConfig",
    "TrainingCurves",
    "build_model",
    "build_optimizer",
    "capped_warmup",
    "check_requirements",
    "clear_run",
    "config_from_args",
    "eval_pipeline",
    "finished_epochs",
    "fit",
    "fit_batch_to_data",
    "learning_rate_schedule",
    "make_callbacks",
    "make_mixer",
    "mix_batch",
    "model_input_size",
    "model_names",
    "parse_auto_augment",
    "plot_history",
    "read_history",
    "run",
    "sample_mix_params",
    "train_pipeline",
]
