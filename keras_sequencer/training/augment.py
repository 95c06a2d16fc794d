"""timm's augmentation flags as Keras layer arguments (no TensorFlow or Keras import).

``--aa rand-m9-mstd0.5-inc1`` becomes ``keras.layers.RandAugment`` keyword
arguments (:func:`parse_auto_augment`); ``--remode`` becomes the ``fill_value``
of ``keras.layers.RandomErasing`` (:data:`REMODES`).
"""

REMODES = {"pixel": None, "const": 0.0}  # timm --remode -> RandomErasing fill_value


def parse_auto_augment(aa):
    """timm's ``--aa rand-m9-n2-mstd0.5-inc1`` -> ``keras.layers.RandAugment`` kwargs.

    ``m`` (magnitude 0-10) becomes ``factor=m/10`` and ``n`` ``num_ops``. Keras
    samples each op's strength uniformly in ``[0, factor]``, which stands in for
    timm's magnitude noise ``mstd``; its ops all grow with the magnitude, as
    timm's ``inc1`` set does. Returns ``None`` for no augmentation.
    """
    if aa in (None, "", "none"):
        return None
    parts = aa.split("-")
    if parts[0] != "rand":
        raise ValueError(
            f"Unsupported --aa {aa!r}: only RandAugment ('rand-m9-mstd0.5-inc1' style) "
            "maps to a Keras layer; AutoAugment/AugMix policies are not available."
        )
    magnitude, num_ops = 9.0, 2
    for part in parts[1:]:
        key = part.rstrip("0123456789.")
        value = part[len(key):]
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"Cannot read {part!r} in --aa {aa!r}.") from None
        if key == "m":
            magnitude = number
        elif key == "n":
            num_ops = int(number)
        elif key == "mstd":
            if number < 0:
                raise ValueError(f"mstd must be >= 0 in --aa {aa!r}.")
        elif key == "inc":
            if number != 1:
                raise ValueError(
                    f"--aa {aa!r}: keras.layers.RandAugment only has increasing-severity "
                    "ops (timm's inc1)."
                )
        else:
            raise ValueError(
                f"Unsupported RandAugment option {key!r} in --aa {aa!r}; "
                "supported: m (magnitude), n (ops), mstd, inc1."
            )
    if not 0 <= magnitude <= 10 or num_ops < 1:
        raise ValueError(f"--aa {aa!r}: magnitude must be in [0, 10] and n >= 1.")
    return dict(factor=magnitude / 10.0, num_ops=num_ops)
