"""int8 weight quantization of Sequencer models with ``model.quantize("int8")``.

Keras quantizes every ``keras.layers.Dense`` a model holds (per output
channel int8 kernels ``(C_in, C_out)`` with a float scale ``(C_out,)``, the
inputs quantized per token at call time, the GEMM in int8). A Sequencer
model's Dense layers are the classifier ``head`` and, per block, BiLSTM2D's
``fc`` and the MLP's ``mlp_fc1`` / ``mlp_fc2``: those run int8 on both the
``"keras"`` and the ``"fused"`` path (the fused kernels call a quantized
Dense as the layer itself). The LSTMs (input and recurrent projections), the
LayerNorms and the patch-embedding convolutions stay float: Keras has no int8
mode for ``LSTMCell`` or ``Conv2D``.

The blocks create their Dense layers in ``build``, where Keras's
deserialization cannot see a quantized dtype policy. :class:`QuantizedSublayers`,
a mix-in of the block layers, records the policies of its quantized Dense
sub-layers in its config (``"quantized_sublayers"``, only when there are any,
so float configs are unchanged) and hands them back to ``build``
(:meth:`QuantizedSublayers.sublayer_dtype`), so a saved quantized model
reloads with the same int8 variables. A ``.weights.h5`` of a quantized model
loads into a model built the same way and quantized first (Keras's rule).
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def quantized_children(layer: "keras.layers.Layer", prefix: str = "") -> dict[str, str]:
    """``{path: dtype policy name}`` of the sub-layers of ``layer`` (at any
    depth, paths of layer names relative to it) that are quantized, e.g.
    ``{"mlp_fc1": "int8_from_float32", "rnn_tokens/fc": "int8_from_float32"}``."""
    found = {}
    for child in layer._flatten_layers(include_self=False, recursive=False):
        path = prefix + child.name
        if getattr(child, "quantization_mode", None) is not None:
            found[path] = child.dtype_policy.name
        found.update(quantized_children(child, path + "/"))
    return found


class QuantizedSublayers:
    """Mix-in for a layer that creates ``keras.layers.Dense`` sub-layers in
    ``build``: keeps their quantized dtype policies through ``get_config`` /
    ``from_config`` (see the module docstring).

    The layer passes ``dtype=self.sublayer_dtype(name)`` when it creates a
    Dense named ``name``: ``None`` (the default policy, as before) unless the
    config recorded a quantized policy for it.
    """

    def __init__(self, *args, quantized_sublayers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.quantized_sublayers = dict(quantized_sublayers or {})

    def sublayer_dtype(self, name: str) -> str | None:
        """The dtype policy name to build the sub-layer ``name`` with, or
        ``None`` for the default."""
        return self.quantized_sublayers.get(name)

    def __setattr__(self, name, value):
        # A sub-layer made in ``__init__`` (a block's token mixer) gets the
        # entries recorded under its name before its own ``build``.
        recorded = self.__dict__.get("quantized_sublayers")
        if recorded and isinstance(value, QuantizedSublayers):
            prefix = value.name + "/"
            for path, policy in recorded.items():
                if path.startswith(prefix):
                    value.quantized_sublayers[path[len(prefix) :]] = policy
        super().__setattr__(name, value)

    def get_config(self):
        config = super().get_config()
        quantized = quantized_children(self) if self.built else self.quantized_sublayers
        if quantized:
            config["quantized_sublayers"] = dict(quantized)
        return config
