"""Stage feature maps of Sequencer2D, as timm's ``features_only=True``."""

import numbers
import re

import keras

from keras_sequencer.models import MODEL_CONFIGS, Sequencer2D, SequencerModel, stage_output_name

# timm's default for sequencer2d_*: the first three stages (the fourth repeats
# the third's resolution and width).
DEFAULT_OUT_INDICES = (0, 1, 2)


def _stage_depths(model):
    depths = {}
    for layer in model.layers:
        match = re.fullmatch(r"stages_(\d+)_blocks_(\d+)", layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    if not depths:
        raise ValueError(f"Model {model.name!r} has no stages_{{i}}_blocks_{{j}} layers: not a Sequencer2D.")
    return [depths[i] for i in range(len(depths))]


def feature_extractor(model, out_indices=DEFAULT_OUT_INDICES, **kwargs):
    """A ``keras.Model`` returning the outputs of the stages ``out_indices``.

    Like timm's ``features_only=True``: channels-last stage outputs (no final
    norm). For ``sequencer2d_s`` at 224 px and the default indices:
    ``(B, 32, 32, 192)``, ``(B, 16, 16, 384)``, ``(B, 16, 16, 384)``.

    Args:
        model: a Sequencer2D ``keras.Model`` (its weights are shared) or a
            variant name (``"sequencer2d_s"``...), built with ``include_top=False``
            and ``**kwargs`` (e.g. ``weights="imagenet"``, ``input_shape``).
        out_indices: stage indices (negative counts from the end), in the
            order the outputs are returned.

    Returns:
        A ``keras.Model`` with one output per index.
    """
    if isinstance(model, str):
        if model not in MODEL_CONFIGS:
            raise ValueError(f"Unknown model {model!r}; expected one of {sorted(MODEL_CONFIGS)}.")
        model = Sequencer2D(**MODEL_CONFIGS[model], include_top=False, name=model, **kwargs)
    elif kwargs:
        raise ValueError(f"Builder arguments {sorted(kwargs)} apply only when model is a name.")
    depths = _stage_depths(model)
    out_indices = tuple(out_indices)
    if not out_indices:
        raise ValueError("out_indices must name at least one stage.")
    names = []
    for index in out_indices:
        if not isinstance(index, numbers.Integral) or not -len(depths) <= index < len(depths):
            raise ValueError(
                f"out_indices must be stage indices in [{-len(depths)}, {len(depths) - 1}]; got {out_indices}."
            )
        stage = int(index) % len(depths)
        names.append(stage_output_name(stage, depths[stage]))
    outputs = [model.get_layer(name).output for name in names]
    return SequencerModel(model.inputs, outputs, name=f"{model.name}_features")
