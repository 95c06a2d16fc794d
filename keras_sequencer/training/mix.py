"""MixUp and CutMix with timm's semantics, as ``tf`` ops for the ``tf.data`` pipeline.

timm's ``Mixup`` (``timm.data.mixup``), which the published recipe uses:

- with probability ``prob`` a batch (``mode="batch"``) or each image
  (``mode="elem"``) is mixed; if both ``mixup`` and ``cutmix`` alphas are set,
  CutMix is chosen with probability ``switch_prob``, else MixUp;
- ``lam ~ Beta(alpha, alpha)`` of the chosen method, one per batch (``batch``)
  or per image (``elem``);
- every image is mixed with the image at the mirrored position of the batch
  (``images[::-1]``), as timm's ``x.flip(0)``;
- CutMix pastes a box of ``int(H * sqrt(1 - lam))`` x ``int(W * sqrt(1 - lam))``
  pixels centred at a uniform integer pixel, clipped to the image, and corrects
  ``lam`` to ``1 - box area / image area`` (timm's ``correct_lam=True``);
- the targets are ``lam * y + (1 - lam) * y[::-1]`` of the one-hot labels.

timm then smooths the mixed targets (``mixup_target``: off value ``s / K``, on
value ``1 - s + s / K``). That is linear in the targets, so
``CategoricalCrossentropy(label_smoothing=s)`` on the mixed one-hot targets
yields exactly timm's smoothed soft targets (:func:`smoothed_targets` says so
in code). The random draws are separate from the mixing
(:func:`sample_mix_params` / :func:`mix_batch`), so the mixing can be checked
against timm's on the same draws.
"""

from keras_sequencer.training.xla import cached, compiled

MODES = ("batch", "elem")


def smoothed_targets(targets, smoothing):
    """timm's ``mixup_target`` smoothing of (mixed) one-hot ``targets`` ``(B, K)``:
    ``targets * (1 - smoothing) + smoothing / K`` (what Keras's
    ``CategoricalCrossentropy(label_smoothing=smoothing)`` does to its targets)."""
    import tensorflow as tf

    targets = tf.convert_to_tensor(targets, tf.float32)
    return targets * (1.0 - smoothing) + smoothing / tf.cast(tf.shape(targets)[-1], tf.float32)


def sample_beta(alpha, shape):
    """``Beta(alpha, alpha)`` samples of ``shape`` (from two Gamma draws)."""
    import tensorflow as tf

    a = tf.random.gamma(shape, alpha, dtype=tf.float32)
    b = tf.random.gamma(shape, alpha, dtype=tf.float32)
    return a / tf.maximum(a + b, 1e-12)


def sample_mix_params(batch_size, mixup_alpha, cutmix_alpha, prob=1.0, switch_prob=0.5, mode="batch"):
    """timm's ``_params_per_batch`` / ``_params_per_elem`` draws.

    Returns ``(lam, use_cutmix, centres)``: ``lam`` float32 ``(B,)`` (1 where not
    mixed; before the CutMix correction), ``use_cutmix`` bool ``(B,)`` and
    ``centres`` float32 ``(B, 2)`` uniform in ``[0, 1)`` (the box centre row and
    column as fractions; :func:`cutmix_boxes` turns them into pixels). In
    ``batch`` mode every entry equals the first.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise ValueError(f"Unsupported mixup mode {mode!r}; supported: {MODES}.")
    n = 1 if mode == "batch" else batch_size
    if mixup_alpha > 0 and cutmix_alpha > 0:
        use_cutmix = tf.random.uniform([n]) < switch_prob
        lam = tf.where(use_cutmix, sample_beta(cutmix_alpha, [n]), sample_beta(mixup_alpha, [n]))
    elif mixup_alpha > 0 or cutmix_alpha > 0:
        use_cutmix = tf.fill([n], cutmix_alpha > 0)
        lam = sample_beta(max(mixup_alpha, cutmix_alpha), [n])
    else:
        raise ValueError("MixUp/CutMix needs mixup > 0 or cutmix > 0.")
    lam = tf.where(tf.random.uniform([n]) < prob, lam, tf.ones([n]))
    centres = tf.random.uniform([n, 2])
    if mode == "batch":
        lam = tf.repeat(lam, batch_size)
        use_cutmix = tf.repeat(use_cutmix, batch_size)
        centres = tf.repeat(centres, batch_size, axis=0)
    return lam, use_cutmix, centres


def cutmix_boxes(height, width, lam, centres):
    """timm's ``rand_bbox`` + ``correct_lam``: boxes ``(B, 4)`` int32 ``(top,
    bottom, left, right)`` (exclusive ends) and the corrected ``lam`` ``(B,)``.

    ``centres`` ``(B, 2)`` in ``[0, 1)`` pick the centre pixel
    ``floor(centre * size)`` (timm's ``np.random.randint(0, size)``).
    """
    import tensorflow as tf

    lam = tf.convert_to_tensor(lam, tf.float32)
    ratio = tf.sqrt(tf.maximum(1.0 - tf.cast(lam, tf.float64), 0.0))
    cut_h = tf.cast(tf.floor(height * ratio), tf.int32)
    cut_w = tf.cast(tf.floor(width * ratio), tf.int32)
    centres = tf.convert_to_tensor(centres, tf.float32)
    cy = tf.minimum(tf.cast(tf.floor(centres[:, 0] * height), tf.int32), height - 1)
    cx = tf.minimum(tf.cast(tf.floor(centres[:, 1] * width), tf.int32), width - 1)
    top = tf.clip_by_value(cy - cut_h // 2, 0, height)
    bottom = tf.clip_by_value(cy + (cut_h + 1) // 2, 0, height)
    left = tf.clip_by_value(cx - cut_w // 2, 0, width)
    right = tf.clip_by_value(cx + (cut_w + 1) // 2, 0, width)
    area = tf.cast((bottom - top) * (right - left), tf.float32)
    return tf.stack([top, bottom, left, right], axis=1), 1.0 - area / float(height * width)


def mix_batch(images, targets, lam, use_cutmix, centres):
    """Mixes ``images`` ``(B, H, W, C)`` float and ``targets`` ``(B, K)`` with
    given draws (see :func:`sample_mix_params`). Returns ``(images, targets)``.

    MixUp images: ``lam * x + (1 - lam) * x[::-1]``; CutMix images: ``x`` with
    the box of ``x[::-1]`` pasted, ``lam`` corrected by the box area.
    Targets: ``lam * y + (1 - lam) * y[::-1]`` with the (corrected) ``lam``.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    lam = tf.convert_to_tensor(lam, tf.float32)
    use_cutmix = tf.convert_to_tensor(use_cutmix, tf.bool)
    boxes, cut_lam = cutmix_boxes(height, width, lam, centres)
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    top, bottom, left, right = (tf.reshape(boxes[:, k], [-1, 1, 1]) for k in range(4))
    in_box = ((rows >= top) & (rows < bottom) & (cols >= left) & (cols < right))[..., None]
    # One pass over the batch: out = own * x + other * x[::-1] with per-pixel
    # weights (B, H, W, 1): (lam, 1 - lam) for MixUp, (0, 1) in a CutMix box
    # and (1, 0) elsewhere; images left unmixed (lam 1) get (1, 0). x * 1 + y * 0
    # is x exactly, so CutMix and unmixed images keep their pixels.
    unmixed = tf.equal(lam, 1.0)  # timm leaves such images untouched (and CutMix boxes empty)
    cutmix_pixels = (use_cutmix & ~unmixed)[:, None, None, None]
    lam_4d = lam[:, None, None, None]
    other = tf.where(cutmix_pixels, tf.cast(in_box, tf.float32), 1.0 - lam_4d)
    own = tf.where(cutmix_pixels, 1.0 - other, lam_4d)
    dtype = images.dtype
    out = images * tf.cast(own, dtype) + tf.reverse(images, [0]) * tf.cast(other, dtype)
    lam = tf.where(use_cutmix & ~unmixed, cut_lam, lam)[:, None]
    targets = tf.cast(targets, tf.float32)
    return out, targets * lam + targets[::-1] * (1.0 - lam)


@cached
def _compiled_mix_batch():
    return compiled(mix_batch)


def make_mixer(mixup_alpha, cutmix_alpha, prob=1.0, switch_prob=0.5, mode="batch"):
    """A ``(images, one_hot_targets) -> (images, mixed_targets)`` batch function
    for ``tf.data`` (timm's ``Mixup``), or ``None`` when both alphas are 0 or
    ``prob`` is 0. The batch size must be even (as timm asserts)."""
    if mode not in MODES:
        raise ValueError(f"Unsupported mixup mode {mode!r}; supported: {MODES}.")
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or prob <= 0:
        return None

    mixed = _compiled_mix_batch()  # one pass over the batch; the draws stay TensorFlow's

    def mix(images, targets):
        batch_size = images.shape[0]
        lam, use_cutmix, centres = sample_mix_params(batch_size, mixup_alpha, cutmix_alpha, prob, switch_prob, mode)
        return mixed(images, targets, lam, use_cutmix, centres)

    return mix
