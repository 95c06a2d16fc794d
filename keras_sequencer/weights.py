"""Loading weights into Sequencer2D models: ``weights=`` of the model builders.

Accepted: a Keras ``.weights.h5`` file (as written by the converter), a timm
``.safetensors`` checkpoint, a ``.pth``/``.pt``/``.bin`` checkpoint (timm or
okojoalg/sequencer layout; needs torch), or ``"imagenet"``.
"""

import os

from keras_sequencer import conversion


def load_weights(model, weights, arch):
    """Loads ``weights`` into ``model``; ``arch`` are the builder's architecture kwargs.

    A ``.weights.h5`` file holds a full model (with its 1000-class head); for
    ``include_top=False`` or another number of classes it is loaded into a twin
    with the stored head and every layer but ``head`` is copied over.
    """
    if weights == "imagenet":
        from keras_sequencer import pretrained

        weights = pretrained.imagenet_weights_path(arch)
    path = os.fspath(weights)
    if not os.path.exists(path):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path to an existing "
            f".weights.h5/.safetensors/.pth file; {path!r} does not exist."
        )
    if path.endswith(conversion.CHECKPOINT_SUFFIXES):
        state_dict = conversion.read_checkpoint(path)
        head = state_dict.get("head.fc.bias")
        skip_head = _head_differs(model, None if head is None else head.shape[0])
        conversion.load_state_dict(model, state_dict, skip_head=skip_head)
    elif path.endswith(".weights.h5"):
        load_keras_weights(model, path, arch)
    else:
        raise ValueError(
            f"Unknown weights file {path!r}; expected a .weights.h5, "
            f"{', '.join(conversion.CHECKPOINT_SUFFIXES)} file."
        )
    return model


def _model_classes(model):
    for layer in model.layers:
        if layer.name == "head":
            return layer.units
    return None


def _head_differs(model, checkpoint_classes):
    """True when the checkpoint's head cannot be used: the model has no head, or
    another number of classes (the head then keeps its fresh initialisation)."""
    classes = _model_classes(model)
    if classes is None:
        return True
    if checkpoint_classes is not None and checkpoint_classes != classes:
        import warnings

        warnings.warn(
            f"{model.name}: the checkpoint's classifier has {checkpoint_classes} classes and "
            f"the model {classes}; loading every weight but the classifier, which "
            "stays randomly initialised (fine-tune it).",
            stacklevel=3,
        )
        return True
    return False


def _stored_classes(path):
    """Output size of the ``head`` Dense stored in a ``.weights.h5`` file, or None.

    Keras names the file's groups after the layer classes, not the layer names:
    the head is the model's only top-level Dense, ``layers/dense`` (the Dense
    layers of the blocks are nested inside ``layers/sequencer2d_block*``).
    """
    import h5py

    with h5py.File(path, "r") as f:
        bias = f.get("layers/dense/vars/1")
        return None if bias is None else bias.shape[0]


def load_keras_weights(model, path, arch):
    from keras_sequencer.models import Sequencer2D

    stored = _stored_classes(path)
    if stored is not None and not _head_differs(model, stored):
        model.load_weights(path)
        return model
    twin = Sequencer2D(
        **arch,
        include_top=stored is not None,
        classes=stored or 1000,
        classifier_activation=None,
        input_shape=(None, None, model.inputs[0].shape[-1]),
    )
    twin.load_weights(path)
    twin_layers = {layer.name: layer for layer in twin.layers}
    for layer in model.layers:
        if layer.weights and layer.name != "head":
            if layer.name not in twin_layers:
                raise ValueError(f"{path} has no weights for layer {layer.name!r}.")
            layer.set_weights(twin_layers[layer.name].get_weights())
    return model
