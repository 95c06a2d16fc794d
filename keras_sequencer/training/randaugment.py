"""timm's RandAugment (``--aa rand-m9-mstd0.5-inc1``) as TensorFlow ops.

The training pipeline is ``tf.data`` on every Keras backend, so each op is
written with TensorFlow ops and runs inside ``Dataset.map``. The ops mirror
``timm.data.auto_augment`` on a PIL RGB image, pixel for pixel where Pillow's
arithmetic allows:

* images are RGB ``(H, W, 3)`` with integer values in ``[0, 255]`` (timm runs
  RandAugment on the uint8 PIL image after the random-resized crop and flip,
  before ``ToTensor``/normalisation and random erasing); the input is rounded
  and clipped to that range, the output is float32 with integer values;
* :func:`op_argument` is timm's ``LEVEL_TO_ARG`` (magnitude 0-10 -> the op's
  argument, with timm's random sign for rotate/shear/translate and the
  increasing enhance ops), computed in float64 as Python does;
* colour ops reproduce Pillow's integer maths (``convert("L")`` weights,
  ``Image.blend`` in float32 then truncation, ``ImageStat`` mean for contrast,
  the SMOOTH kernel for sharpness, ``ImageOps`` look-up tables);
* geometric ops reproduce Pillow's ``Image.transform(AFFINE, BILINEAR)``:
  pixel-centre coordinates, neighbours clamped to the edge, the fill colour
  where the sampled point falls outside the image, truncation to uint8.
  (``ImageProjectiveTransformV3`` would instead blend edge pixels with the
  fill.) timm picks bilinear or bicubic at random per op when
  ``--train-interpolation random``; here it is always bilinear.

Inside :func:`rand_augment` every op but Equalize runs compiled by XLA
(:mod:`.xla`), with the same pixels as :func:`apply_op` run op by op.

Posterize to 0 bits gives a black image (timm's intent, and what older Pillow
did; Pillow >= 10 rejects 0 bits, so timm itself fails there).
"""

import math

import tensorflow as tf

from keras_sequencer.training.augment import IMAGENET_MEAN_PIXEL
from keras_sequencer.training.xla import cached, compiled

LEVEL_DENOM = 10.0
_ENHANCE = ("Color", "Contrast", "Brightness", "Sharpness")
_SIGNED = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3}
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
# Where each band's 256 entries start in a flat (3 * 256) table or histogram.
_BAND_OFFSETS = (0, 256, 512)


def _float64(value):
    """``value`` as float64 without a float32 detour (``tf.cast`` of a Python
    float would round it to float32 first)."""
    if tf.is_tensor(value):
        return tf.cast(value, tf.float64)
    return tf.constant(value, tf.float64)


def op_argument(name, magnitude, negate=False, translate_pct=0.45):
    """timm's ``LEVEL_TO_ARG[name](magnitude)`` as a float64 scalar tensor.

    ``magnitude``: the (already noised and clipped) level on the 0-10 scale;
    ``negate``: the outcome of timm's ``_randomly_negate`` (used by rotate,
    shear, translate and the increasing enhance ops). Returns ``None`` for the
    ops without argument (AutoContrast, Equalize, Invert).
    """
    level = _float64(magnitude) / LEVEL_DENOM
    sign = tf.where(tf.cast(negate, tf.bool), tf.constant(-1.0, tf.float64), 1.0)
    base = name.replace("Increasing", "")
    if name in _SIGNED:
        return sign * (level * _SIGNED[name])
    if name in ("TranslateXRel", "TranslateYRel"):
        return sign * (level * translate_pct)
    if base in _ENHANCE:
        if name.endswith("Increasing"):
            return tf.maximum(tf.constant(0.1, tf.float64), 1.0 + sign * (level * 0.9))
        return level * 1.8 + 0.1
    if base == "Posterize":
        bits = tf.floor(level * 4)
        return 4.0 - bits if name.endswith("Increasing") else bits
    if base == "Solarize":
        threshold = tf.minimum(tf.constant(256.0, tf.float64), tf.floor(level * 256))
        return 256.0 - threshold if name.endswith("Increasing") else threshold
    if name == "SolarizeAdd":
        return tf.minimum(tf.constant(128.0, tf.float64), tf.floor(level * 110))
    if name in ("AutoContrast", "Equalize", "Invert"):
        return None
    raise ValueError(f"Unknown RandAugment op {name!r}.")


def _blend(degenerate, image, factor):
    """Pillow's ``Image.blend(degenerate, image, factor)`` on 8-bit bands:
    ``degenerate + factor * (image - degenerate)`` in float32, truncated, clipped."""
    alpha = tf.cast(factor, tf.float32)
    value = degenerate + alpha * (image - degenerate)
    return tf.clip_by_value(tf.floor(value), 0.0, 255.0)


def _grey(image):
    """Pillow's ``convert("L")``: ``(R*19595 + G*38470 + B*7471 + 2**15) >> 16``, (H, W, 1)."""
    rgb = tf.cast(image, tf.int32)
    weighted = rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000
    return tf.cast(tf.bitwise.right_shift(weighted, 16), tf.float32)[..., None]


def _smooth(image):
    """Pillow's ``ImageFilter.SMOOTH`` (3x3, centre 5, others 1, /13, rounded);
    the one-pixel border is copied unchanged, as Pillow does. The weighted
    sums are whole numbers below 2**24, exact in float32, and ``sum / 13`` is
    never within float32's error of a rounding boundary. The sum is nine
    shifted slices rather than a depthwise convolution: the same numbers, and
    XLA's CPU compiler runs slices far faster than that convolution."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    total = 4.0 * image[1:-1, 1:-1]
    for dy in range(3):
        for dx in range(3):
            total += image[dy : height - 2 + dy, dx : width - 2 + dx]
    inner = tf.clip_by_value(tf.floor(total / 13.0 + 0.5), 0.0, 255.0)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    interior = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    return tf.where(interior, tf.pad(inner, [[1, 1], [1, 1], [0, 0]]), image)


def _look_up(image, tables):
    """Each band of ``image`` (integer values in [0, 255]) through its 256-entry
    table: ``tables`` int32 (3, 256). Returns float32 (H, W, 3)."""
    flat = tf.reshape(tables, [-1])
    return tf.cast(tf.gather(flat, tf.cast(image, tf.int32) + _BAND_OFFSETS), tf.float32)


def _autocontrast(image):
    """``ImageOps.autocontrast``: each band stretched from [min, max] to [0, 255]."""
    low = tf.cast(tf.reduce_min(image, axis=(0, 1)), tf.float64)
    high = tf.cast(tf.reduce_max(image, axis=(0, 1)), tf.float64)
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = tf.floor(tf.cast(image, tf.float64) * scale + (-low * scale))
    stretched = tf.cast(tf.clip_by_value(stretched, 0.0, 255.0), tf.float32)
    return tf.where(high > low, stretched, image)


def _equalize(image):
    """``ImageOps.equalize``: per band, Pillow's integer histogram-equalising table."""
    indices = tf.cast(image, tf.int32) + _BAND_OFFSETS
    counts = tf.reshape(tf.math.bincount(tf.reshape(indices, [-1]), minlength=768, maxlength=768), (3, 256))
    last = tf.reduce_max(tf.where(counts > 0, tf.range(256)[None], -1), axis=1)
    last_count = tf.gather(counts, last, batch_dims=1)
    step = (tf.reduce_sum(counts, axis=1) - last_count) // 255
    below = tf.cumsum(counts, axis=1, exclusive=True)
    table = (step[:, None] // 2 + below) // tf.maximum(step[:, None], 1)
    table = tf.minimum(table, 255)
    keep = (tf.reduce_sum(tf.cast(counts > 0, tf.int32), axis=1) <= 1) | (step == 0)
    table = tf.where(keep[:, None], tf.range(256)[None], table)
    return _look_up(image, table)


def _affine(image, matrix, fill):
    """Pillow's ``Image.transform(size, AFFINE, matrix, BILINEAR, fillcolor=fill)``.

    Output pixel ``(x, y)`` samples the input at ``(a, b, c, d, e, f) @ (x +
    0.5, y + 0.5, 1)`` (pixel-edge coordinates); outside ``[0, W) x [0, H)``
    it is ``fill``, inside bilinear with neighbours clamped to the edge,
    truncated to an integer.
    """
    a, b, c, d, e, f = (_float64(v) for v in matrix)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    ys, xs = tf.meshgrid(
        tf.range(tf.cast(height, tf.float64)) + 0.5,
        tf.range(tf.cast(width, tf.float64)) + 0.5,
        indexing="ij",
    )
    x_in = a * xs + b * ys + c
    y_in = d * xs + e * ys + f
    w, h = tf.cast(width, tf.float64), tf.cast(height, tf.float64)
    inside = (x_in >= 0.0) & (x_in < w) & (y_in >= 0.0) & (y_in < h)
    x_in, y_in = x_in - 0.5, y_in - 0.5
    x0, y0 = tf.floor(x_in), tf.floor(y_in)
    dx, dy = (x_in - x0)[..., None], (y_in - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    flat = tf.reshape(tf.cast(image, tf.float64), (-1, 3))

    def pixel(y, x):
        y = tf.clip_by_value(y, 0, height - 1)
        x = tf.clip_by_value(x, 0, width - 1)
        return tf.gather(flat, y * width + x)

    top = pixel(y0, x0) + (pixel(y0, x0 + 1) - pixel(y0, x0)) * dx
    bottom = pixel(y0 + 1, x0) + (pixel(y0 + 1, x0 + 1) - pixel(y0 + 1, x0)) * dx
    value = tf.cast(tf.floor(top + (bottom - top) * dy), tf.float32)
    return tf.where(inside[..., None], value, tf.constant(fill, tf.float32))


def _rotation_matrix(degrees, height, width):
    """Pillow's ``Image.rotate(degrees)`` matrix (about the centre, no expand)."""
    angle = -(tf.math.floormod(_float64(degrees), 360.0) * (math.pi / 180.0))
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = tf.cast(width, tf.float64) / 2, tf.cast(height, tf.float64) / 2
    c = (cos * -cx + sin * -cy + 0.0) + cx
    f = (-sin * -cx + cos * -cy + 0.0) + cy
    return cos, sin, c, -sin, cos, f


def apply_op(name, image, argument=None, fill=IMAGENET_MEAN_PIXEL):
    """timm's ``NAME_TO_OP[name](img, argument, fillcolor=fill, resample=BILINEAR)``.

    ``image``: RGB (H, W, 3), integer values in [0, 255] (any real dtype);
    ``argument``: what :func:`op_argument` returns for this op. Returns
    float32 (H, W, 3) with integer values in [0, 255].
    """
    image = tf.cast(image, tf.float32)
    base = name.replace("Increasing", "")
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if name == "AutoContrast":
        return _autocontrast(image)
    if name == "Equalize":
        return _equalize(image)
    if name == "Invert":
        return 255.0 - image
    if base == "Posterize":  # keep the top `bits` bits; 0 bits -> black
        bits = tf.clip_by_value(tf.cast(argument, tf.int32), 0, 8)
        mask = 256 - tf.bitwise.left_shift(1, 8 - bits)
        kept = tf.bitwise.bitwise_and(tf.cast(image, tf.int32), mask)
        return tf.cast(kept, tf.float32)
    if base == "Solarize":
        return tf.where(image < tf.cast(argument, tf.float32), image, 255.0 - image)
    if name == "SolarizeAdd":
        added = tf.minimum(255.0, image + tf.cast(argument, tf.float32))
        return tf.where(image < 128.0, added, image)
    if base == "Color":
        return _blend(_grey(image), image, argument)
    if base == "Contrast":
        mean = tf.floor(tf.reduce_mean(tf.cast(_grey(image), tf.float64)) + 0.5)
        return _blend(tf.cast(mean, tf.float32), image, argument)
    if base == "Brightness":
        return _blend(tf.zeros_like(image), image, argument)
    if base == "Sharpness":
        return _blend(_smooth(image), image, argument)
    if name not in GEOMETRIC:
        raise ValueError(f"Unknown RandAugment op {name!r}.")
    return _affine(image, affine_matrix(name, argument, height, width), fill)


def affine_matrix(name, argument, height, width):
    """Pillow's inverse affine ``(a, b, c, d, e, f)`` (float64 scalars) of a
    geometric op: rotate ``argument`` degrees counter-clockwise about the
    centre, shear by ``argument``, or translate by ``argument`` times the
    width/height (content moves left/up for a positive argument)."""
    zero, one = tf.constant(0.0, tf.float64), tf.constant(1.0, tf.float64)
    argument = _float64(argument)
    if name == "Rotate":
        return _rotation_matrix(argument, height, width)
    if name == "ShearX":
        return (one, argument, zero, zero, one, zero)
    if name == "ShearY":
        return (one, zero, zero, argument, one, zero)
    if name == "TranslateXRel":
        return (one, zero, argument * tf.cast(width, tf.float64), zero, one, zero)
    if name == "TranslateYRel":
        return (one, zero, zero, zero, one, argument * tf.cast(height, tf.float64))
    raise ValueError(f"Unknown geometric RandAugment op {name!r}.")


def sample_ops(policy, seed):
    """The random draws of one image's RandAugment: ``num_ops`` ops chosen
    uniformly with replacement, whether each is applied (``prob``), its
    magnitude (noise ``magnitude_std``, clipped to ``[0, upper_bound]``) and
    its sign. ``seed``: int32/int64 (2,) for stateless sampling.

    Returns a dict of (num_ops,) tensors: ``index`` int32 into
    ``policy.transforms``, ``apply`` bool, ``magnitude`` float64, ``negate`` bool.
    """
    count = policy.num_ops
    uniform_seed, normal_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    draws = tf.random.stateless_uniform((count, 4), seed=uniform_seed, dtype=tf.float64)
    num_transforms = len(policy.transforms)
    index = tf.minimum(tf.cast(draws[:, 0] * num_transforms, tf.int32), num_transforms - 1)
    magnitude = tf.fill((count,), tf.constant(float(policy.magnitude), tf.float64))
    if policy.magnitude_std == float("inf"):
        magnitude = magnitude * draws[:, 3]
    elif policy.magnitude_std > 0:
        noise = tf.random.stateless_normal((count,), seed=normal_seed, dtype=tf.float64)
        magnitude = magnitude + policy.magnitude_std * noise
    return dict(
        index=index,
        apply=draws[:, 1] <= policy.prob,
        magnitude=tf.clip_by_value(magnitude, 0.0, policy.upper_bound),
        negate=draws[:, 2] > 0.5,
    )


# Every op but these runs compiled by XLA (:mod:`.xla`): Equalize's histogram (a
# bincount) runs faster as TensorFlow's kernel.
_NOT_COMPILED = ("Equalize",)


@cached
def _plain_op(name, translate_pct):
    """``(image, magnitude, negate) -> image``: one non-geometric op, compiled."""

    def op(image, magnitude, negate):
        return apply_op(name, image, op_argument(name, magnitude, negate, translate_pct))

    return compiled(op, name not in _NOT_COMPILED)


@cached
def _geometric_ops(geometric, matrix_of, translate_pct, fill):
    """``(image, index, magnitude, negate) -> image``: the geometric op
    ``geometric[matrix_of[index]]``, compiled as one function (the ops differ
    only in their matrix)."""

    def op(image, index, magnitude, negate):
        height, width = tf.shape(image)[0], tf.shape(image)[1]

        def matrix(name):
            return lambda: affine_matrix(name, op_argument(name, magnitude, negate, translate_pct), height, width)

        chosen = tf.switch_case(tf.gather(matrix_of, index), [matrix(name) for name in geometric])
        return _affine(image, chosen, fill)

    return compiled(op)


def rand_augment(image, policy, seed=None):
    """Apply a :class:`~keras_sequencer.training.augment.RandAugmentPolicy` to one image.

    ``image``: RGB (H, W, 3), values in [0, 255] (rounded and clipped first,
    as the uint8 PIL image timm works on). ``seed``: (2,) integer tensor for
    reproducible draws, or ``None`` to draw one. Returns float32 (H, W, 3)
    with integer values in [0, 255].
    """
    image = tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0.0, 255.0)
    if seed is None:
        seed = tf.random.uniform((2,), maxval=2**31 - 1, dtype=tf.int32)
    draws = sample_ops(policy, seed)
    names = policy.transforms
    geometric = [name for name in names if name in GEOMETRIC]
    others = [name for name in names if name not in GEOMETRIC]
    # One branch per non-geometric op and one shared by the geometric ops (which
    # differ only in their matrix): a smaller graph to build and optimise.
    branch_of = [others.index(n) if n in others else len(others) for n in names]
    matrix_of = [geometric.index(n) if n in geometric else 0 for n in names]

    def plain(name):
        compute = _plain_op(name, policy.translate_pct)

        def run(current, index, magnitude, negate):
            return tf.ensure_shape(compute(current, magnitude, negate), current.shape)

        return run

    compiled_geometric = _geometric_ops(tuple(geometric), tuple(matrix_of), policy.translate_pct, policy.fill)

    def geometric_op(current, index, magnitude, negate):
        return tf.ensure_shape(compiled_geometric(current, index, magnitude, negate), current.shape)

    def unchanged(current, index, magnitude, negate):
        return current

    functions = [plain(name) for name in others] + [geometric_op] * bool(geometric) + [unchanged]
    spec = (
        tf.TensorSpec(image.shape, tf.float32),
        tf.TensorSpec([], tf.int32),
        tf.TensorSpec([], tf.float64),
        tf.TensorSpec([], tf.bool),
    )
    branches = [tf.function(f, input_signature=spec, autograph=False).get_concrete_function() for f in functions]
    # A Case op made directly: tf.switch_case's is lowered to Switch/Merge nodes
    # in a tf.data function, and then every op of every branch costs time on
    # every image, taken or not; the Case op runs only the chosen branch.
    for k in range(policy.num_ops):
        index = draws["index"][k]
        branch = tf.where(draws["apply"][k], tf.gather(branch_of, index), len(functions) - 1)
        (image,) = tf.raw_ops.Case(
            branch_index=branch,
            input=[image, index, draws["magnitude"][k], draws["negate"][k]],
            Tout=[tf.float32],
            branches=branches,
            output_shapes=[image.shape],
        )
    return image
