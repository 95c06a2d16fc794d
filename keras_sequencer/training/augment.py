"""timm's augmentation flags as plain Python values (no TensorFlow or Keras import).

``--aa rand-m9-mstd0.5-inc1`` becomes a :class:`RandAugmentPolicy`
(:func:`parse_auto_augment`), which :mod:`keras_sequencer.training.randaugment`
applies with TensorFlow ops inside the ``tf.data`` pipeline; ``--remode``
becomes the ``fill_value`` of ``keras.layers.RandomErasing`` (:data:`REMODES`).
"""

import dataclasses
import re

REMODES = {"pixel": None, "const": 0.0}  # timm --remode -> RandomErasing fill_value

# timm's RandAugment op sets (``_RAND_TRANSFORMS`` and, for ``inc1``,
# ``_RAND_INCREASING_TRANSFORMS``): the same 15 ops in the same order; the
# increasing set swaps in variants whose severity grows with the magnitude.
RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
    "SolarizeAdd", "Color", "Contrast", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
    "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
    "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)  # fmt: skip

# timm's fill for the geometric ops: the ImageNet mean pixel in 0-255,
# ``tuple(round(255 * x) for x in IMAGENET_DEFAULT_MEAN)`` (transforms_factory).
IMAGENET_MEAN_PIXEL = (124, 116, 104)

_GRAMMAR = "'rand-m<int>[-n<int>][-mstd<float>][-mmax<int>][-inc<0|1>][-p<float>]'"


@dataclasses.dataclass(frozen=True)
class RandAugmentPolicy:
    """timm's ``rand-...`` policy: per image, ``num_ops`` ops drawn uniformly
    with replacement from :attr:`transforms`, each applied with probability
    ``prob`` at a magnitude drawn around ``magnitude`` (0-10 scale).

    ``magnitude_std``: std of the Gaussian magnitude noise (0: none, ``inf``:
    uniform in ``[0, magnitude]``); the magnitude is then clipped to
    ``[0, magnitude_max or 10]``. ``increasing``: timm's ``inc1`` op set.
    ``fill``: RGB value of the pixels the geometric ops bring in.
    ``translate_pct``: the largest translation, as a fraction of the side.
    """

    magnitude: int = 10
    num_ops: int = 2
    prob: float = 0.5
    magnitude_std: float = 0.0
    magnitude_max: int = None
    increasing: bool = False
    fill: tuple = IMAGENET_MEAN_PIXEL
    translate_pct: float = 0.45

    @property
    def transforms(self):
        """The op names, timm's spelling (``LEVEL_TO_ARG`` keys)."""
        return RAND_INCREASING_TRANSFORMS if self.increasing else RAND_TRANSFORMS

    @property
    def upper_bound(self):
        """Magnitudes are clipped to ``[0, upper_bound]`` (timm: ``mmax`` or 10;
        ``mmax0`` means 10, as in timm)."""
        return float(self.magnitude_max or 10)


def parse_auto_augment(aa):
    """timm's ``--aa rand-m9-n2-mstd0.5-mmax10-inc1-p0.5`` -> :class:`RandAugmentPolicy`.

    The sections after ``rand`` may come in any order, as in timm's
    ``rand_augment_transform``: ``m`` magnitude (int, default 10), ``n`` ops
    per image (int, default 2), ``mstd`` magnitude noise (float, above 100:
    uniform sampling), ``mmax`` magnitude clip (int), ``inc`` increasing op
    set (0/1, default 0), ``p`` probability of each op (float, default 0.5).
    A repeated ``mstd`` or ``mmax`` keeps its first value, as timm does.
    Returns ``None`` for no augmentation. Raises a one-line ``ValueError``
    naming ``--aa`` for anything else (AutoAugment/AugMix policies, timm's
    ``t`` transform sets, sections timm would ignore or reject).
    """
    if aa in (None, "", "none"):
        return None
    parts = str(aa).split("-")
    if parts[0] != "rand":
        raise ValueError(
            f"Unsupported --aa {aa!r}: only RandAugment ({_GRAMMAR}) is available, "
            "not timm's AutoAugment/AugMix policies."
        )
    values = dict(magnitude=10, num_ops=2, prob=0.5, increasing=False)
    for part in parts[1:]:
        match = re.fullmatch(r"([a-z]+)(\d.*)", part)
        key, text = match.groups() if match else (part.rstrip("0123456789."), "")
        if key == "t":
            raise ValueError(f"--aa {aa!r}: timm's transform sets ('t{part[1:]}') are not available; use {_GRAMMAR}.")
        if key not in ("m", "n", "mstd", "mmax", "inc", "p"):
            raise ValueError(f"Unsupported RandAugment option {key!r} in --aa {aa!r}; use {_GRAMMAR}.")
        integer = key in ("m", "n", "mmax", "inc")
        try:
            number = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise ValueError(f"--aa {aa!r}: {key!r} needs {kind}, got {part!r}.") from None
        if key == "m":
            values["magnitude"] = number
        elif key == "n":
            values["num_ops"] = number
        elif key == "mstd":
            values.setdefault("magnitude_std", float("inf") if number > 100 else number)
        elif key == "mmax":
            values.setdefault("magnitude_max", number)
        elif key == "inc":
            values["increasing"] = bool(number)
        else:
            values["prob"] = number
    if values["num_ops"] < 1 or not 0.0 <= values["prob"] <= 1.0:
        raise ValueError(f"--aa {aa!r}: n must be >= 1 and p in [0, 1].")
    if values.get("magnitude_std", 0.0) < 0:
        raise ValueError(f"--aa {aa!r}: mstd must be >= 0.")
    return RandAugmentPolicy(**values)
