"""What the ``keras-sequencer`` sub-commands share: the one-line error type,
input checks that run before any model is built, and the ``--model`` /
``--weights`` flags. Every check here runs before a model is built, so a bad path or
flag is reported at once, in terms of the command line.
"""

import argparse
import os
import sys

PROG = "keras-sequencer"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each flag's line with its default, ``(default: 300)``,
    unless the help already says it or there is none (``None``, an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        off = default is None or default is False or default is argparse.SUPPRESS or default == ""
        if off or "%(default)" in text or "default:" in text:
            return text
        if isinstance(default, (list, tuple)):
            default = " ".join(str(v) for v in default)
        return f"{text} (default: {default})"


class CLIError(ValueError):
    """A user error of a sub-command, printed as one line
    ``keras-sequencer <command>: error: <message>`` (exit status 1)."""


def one_line(error):
    """``error`` as one line of text (its message, whitespace collapsed).

    ``OSError``\\ s with an errno read ``"<reason>: <file>"``; an exception with
    an empty message gives its type name.
    """
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        text = f"{error.strerror}: {error.filename}"
    else:
        text = str(error)
    text = " ".join(text.split())
    return text or type(error).__name__


def report(command, message):
    """Prints ``keras-sequencer <command>: error: <message>`` to stderr."""
    print(f"{PROG} {command}: error: {message}", file=sys.stderr, flush=True)


def require_file(path, flag=None):
    """Raises :class:`CLIError` unless ``path`` is a readable file.

    The message names the flag (``--weights /x.h5: no such file``) or, for a
    positional argument, the path alone.
    """
    label = f"{flag} {path}" if flag else str(path)
    if not os.path.exists(path):
        raise CLIError(f"{label}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{label}: is a directory, expected a file")
    if not os.access(path, os.R_OK):
        raise CLIError(f"{label}: permission denied")


def require_directory(path, label):
    """Raises :class:`CLIError` unless ``path`` is a directory."""
    if not os.path.exists(path):
        raise CLIError(f"{label} {path}: no such directory")
    if not os.path.isdir(path):
        raise CLIError(f"{label} {path}: is not a directory")


def check_weights(weights):
    """``--weights``: ``imagenet`` or an existing checkpoint file; returns the value
    to pass as ``weights=``."""
    if weights == "imagenet":
        return weights
    require_file(weights, "--weights")
    return weights


def check_model(name, weights=None):
    """``--model``: a registered name; returns its variant (input size, published
    weights). With ``weights="imagenet"`` the name must have published weights."""
    from keras_sequencer.variants import get_variant, list_models

    try:
        variant = get_variant(name)
    except ValueError as error:
        raise CLIError(f"--model {name}: {one_line(error)}") from None
    if weights == "imagenet" and not variant.pretrained:
        raise CLIError(
            f"--model {name} has no published ImageNet weights; use --weights PATH "
            f"or one of: {', '.join(list_models(pretrained=True))}"
        )
    return variant


def add_model_arguments(parser):
    """``--model`` and ``--weights``, shared by ``predict`` and ``validate``."""
    parser.add_argument(
        "--model",
        default="sequencer2d_s",
        help="any registered model name (keras_sequencer.list_models()), or a saved .keras model; default: %(default)s",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        metavar="imagenet|PATH",
        help="'imagenet' (default: downloaded once, then cached), a .weights.h5/.safetensors/.pth file "
        "of --model, or a saved .keras model (what train writes: its classes and input size are used)",
    )


def saved_model_path(args):
    """The saved ``.keras`` model given as ``--weights`` or ``--model`` (checked to be a
    readable file), or ``None``."""
    for flag, value in (("--weights", args.weights), ("--model", args.model)):
        if value is not None and str(value).endswith(".keras"):
            require_file(value, flag)
            return str(value)
    return None


def checkpoint_classes(weights, num_classes):
    """Classes to build ``--model`` with for ``--weights`` (``imagenet`` or a weights
    file): ``--num-classes`` if given (a :class:`CLIError` if the file's classifier has
    another size), else the file's, else 1000."""
    if weights == "imagenet":
        stored = 1000
    else:
        from keras_sequencer.weights import stored_classes

        stored = stored_classes(weights)
    if num_classes is not None and stored is not None and num_classes != stored:
        raise CLIError(
            f"--weights {weights} has a {stored}-class classifier, not --num-classes {num_classes}; "
            f"leave --num-classes out (or give {stored})"
        )
    if num_classes is None and stored is None:
        raise CLIError(f"--weights {weights} holds no classifier (a model without top); it cannot classify")
    return num_classes or stored


def model_input_size(model, default):
    """The ``(height, width)`` a model was built for, or ``(default, default)`` for a
    model that takes any size."""
    height, width = tuple(model.inputs[0].shape)[1:3]
    if height is None or width is None:
        return default, default
    return int(height), int(width)


def as_probabilities(model, scores):
    """``scores`` of ``model`` as probabilities: as they are from a softmax head, else
    (logits) through a softmax."""
    import numpy as np

    activation = getattr(getattr(model.layers[-1], "activation", None), "__name__", "")
    if activation == "softmax":
        return scores
    scores = np.asarray(scores, dtype="float64")
    exp = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)
