"""The layers between an image and the blocks' grid: the input check, the
non-overlapping patch embedding (stem and downsampling) and the
VanillaSequencer's learned position embedding. Channels-last ``(batch,
height, width, channels)`` tensors; all are registered under the package
name their saved files carry."""

import keras
from keras import ops

from keras_sequencer.kernels import backend_kernels

PACKAGE = "keras_sequencer"


def register(cls):
    """Registers ``cls`` for saving and loading as ``keras_sequencer>ClassName``."""
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)


@register
class PatchEmbedding(keras.layers.Conv2D):
    """Non-overlapping patch embedding / downsampling: Conv2D with kernel = stride = patch.

    ``(B, H, W, C) -> (B, H // patch, W // patch, filters)``. Also used with
    ``patch_size=1`` (the 1x1 "downsample" convs of stages 3 and 4). Raises a
    ``ValueError`` when the input is smaller than one patch. The convolution is
    the backend's ``patch_embedding`` kernel (on torch one GEMM over the
    flattened patches).
    """

    def __init__(self, filters: int, patch_size: int, **kwargs):
        for key in ("kernel_size", "strides", "padding"):
            kwargs.pop(key, None)
        super().__init__(filters, kernel_size=patch_size, strides=patch_size, padding="valid", **kwargs)
        self.patch_size = int(patch_size)

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        for size in (height, width):
            if size is not None and size < self.patch_size:
                raise ValueError(
                    f"{self.name}: input of spatial size {height}x{width} is smaller "
                    f"than the patch size {self.patch_size}."
                )
        return backend_kernels().patch_embedding(self, x)

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "padding"):
            config.pop(key, None)
        return {**config, "patch_size": self.patch_size}


@register
class ImageInputCheck(keras.layers.Layer):
    """Identity that rejects inputs the network cannot handle, with a clear message.

    Checks rank 4 ``(batch, height, width, channels)``, the channel count and
    that height and width are at least ``min_size`` (the model's total stride),
    whenever those dimensions are known (always on eager calls and in
    ``predict``/``fit``).
    """

    def __init__(self, channels: int, min_size: int, model_name: str = "model", **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.min_size = int(min_size)
        self.model_name = model_name

    def call(self, x):
        shape = tuple(x.shape)
        if len(shape) != 4:
            raise ValueError(
                f"{self.model_name} expects a batch of images of shape "
                f"(batch, height, width, {self.channels}); got an input of shape {shape}."
            )
        if shape[-1] is not None and shape[-1] != self.channels:
            raise ValueError(
                f"{self.model_name} expects images with {self.channels} channels "
                f"(channels last); got an input of shape {shape}."
            )
        height, width = shape[1], shape[2]
        if any(s is not None and s < self.min_size for s in (height, width)):
            raise ValueError(
                f"{self.model_name} needs images of at least {self.min_size}x{self.min_size} "
                f"pixels (its total stride); got {height}x{width}."
            )
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "min_size": self.min_size,
            "model_name": self.model_name,
        }


@register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned absolute position embedding: ``x + pos``, ``pos`` of shape
    ``(1, H, W, C)`` (truncated normal, std 0.02, as the paper's ``absolute_pos_embed``).

    H and W are fixed when the layer is built, so a model using it takes one
    input size only; another size raises a ``ValueError``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.grid = None

    def build(self, input_shape):
        grid = tuple(input_shape[1:])
        if len(grid) != 3 or any(s is None for s in grid):
            raise ValueError(
                f"{self.name}: a position embedding needs a fixed (height, width, channels) "
                f"grid; got input shape {tuple(input_shape)} (give the model a fixed input_shape)."
            )
        self.grid = grid
        self.embedding = self.add_weight(
            shape=(1,) + grid,
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, x):
        if tuple(x.shape[1:]) != self.grid and None not in x.shape[1:]:
            raise ValueError(
                f"{self.name}: the position embedding is for a {self.grid[0]}x{self.grid[1]} "
                f"grid of {self.grid[2]} channels; got features of shape {tuple(x.shape)}."
            )
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
