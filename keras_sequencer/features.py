"""Stage feature maps of Sequencer2D, as timm's ``features_only=True``."""

import numbers
import re
from collections.abc import Sequence

import keras

from keras_sequencer.models import ChannelsFirstInput, SequencerModel
from keras_sequencer.registry import create_model

# timm's default for sequencer2d_*: the first three stages (the fourth repeats
# the third's resolution and width).
DEFAULT_OUT_INDICES = (0, 1, 2)


def stage_output_names(model: keras.Model) -> list[str]:
    """Names of the layers whose outputs are the stage feature maps of ``model``,
    one per stage: its last block ``stages_{i}_blocks_{j}``, or for a stage of 0
    blocks (the CIFAR models' pointwise linear stage) its ``stages_{i}_downsample``."""
    last = {}
    for layer in model.layers:
        match = re.fullmatch(r"stages_(\d+)_(?:blocks_(\d+)|downsample)", layer.name)
        if match:
            stage, block = int(match.group(1)), match.group(2)
            order = -1 if block is None else int(block)
            if order >= last.get(stage, (-2, None))[0]:
                last[stage] = (order, layer.name)
    if not last or sorted(last) != list(range(len(last))):
        raise ValueError(f"Model {model.name!r} has no stages_{{i}}_blocks_{{j}} layers: not a Sequencer2D.")
    return [last[i][1] for i in range(len(last))]


def feature_extractor(
    model: keras.Model | str, out_indices: Sequence[int] = DEFAULT_OUT_INDICES, **kwargs
) -> keras.Model:
    """A ``keras.Model`` returning the outputs of the stages ``out_indices``.

    Like timm's ``features_only=True``: the stage outputs (no final norm), in
    the model's image layout. For ``sequencer2d_s`` at 224 px and the default
    indices: ``(B, 32, 32, 192)``, ``(B, 16, 16, 384)``, ``(B, 16, 16, 384)``;
    for a model built under ``channels_first``, ``(B, 192, 32, 32)``, ...

    Args:
        model: a Sequencer2D ``keras.Model`` (its weights are shared) or a
            registered name (``"sequencer2d_s"``..., see
            :func:`keras_sequencer.list_models`), built by
            :func:`keras_sequencer.create_model` with ``include_top=False`` and
            ``**kwargs`` (e.g. ``weights="imagenet"``, ``input_shape``).
        out_indices: stage indices (negative counts from the end), in the
            order the outputs are returned.

    Returns:
        A ``keras.Model`` with one output per index.
    """
    if isinstance(model, str):
        model = create_model(model, include_top=False, **kwargs)
    elif kwargs:
        raise ValueError(f"Builder arguments {sorted(kwargs)} apply only when model is a name.")
    stages = stage_output_names(model)
    out_indices = tuple(out_indices)
    if not out_indices:
        raise ValueError("out_indices must name at least one stage.")
    names = []
    for index in out_indices:
        if not isinstance(index, numbers.Integral) or not -len(stages) <= index < len(stages):
            raise ValueError(
                f"out_indices must be stage indices in [{-len(stages)}, {len(stages) - 1}]; got {out_indices}."
            )
        names.append(stages[int(index) % len(stages)])
    outputs = [model.get_layer(name).output for name in names]
    if any(isinstance(layer, ChannelsFirstInput) for layer in model.layers):
        # The network computes channels-last inside; its feature maps go out in
        # the layout of its input, as its own 4-D output does.
        outputs = [
            keras.layers.Permute((3, 1, 2), name=f"{name}_channels_first")(output)
            for name, output in zip(names, outputs)
        ]
    return SequencerModel(model.inputs, outputs, name=f"{model.name}_features")
