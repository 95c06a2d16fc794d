"""Optional packages: checked before a run does any work, named with the extra
that installs them.

A run that needs a package which is not installed fails at once with one line
(:class:`MissingPackageError`, a ``ValueError`` as well, so command-line
front ends print it without a traceback); a convenience such as a plot is
skipped with one warning line instead (:func:`available`).
"""

import importlib
import sys

# import name -> (pip distribution, the keras-sequencer extra that installs it)
PACKAGES = {
    "tensorflow": ("tensorflow-cpu", "train"),
    "tensorflow_datasets": ("tensorflow-datasets", "train"),
    "sklearn": ("scikit-learn", "train"),
    "matplotlib": ("matplotlib", "train"),
    "PIL": ("pillow", "images"),
    "importlib_resources": ("importlib-resources", "train"),  # tensorflow-datasets needs it
    "keras_hub": ("keras-hub", "hub"),
}


class MissingPackageError(ImportError, ValueError):
    """An optional package a run needs is not installed (or fails to import)."""


def install_hint(module):
    """``pip install "keras-sequencer[EXTRA]"`` for ``module`` (an import name)."""
    top = module.split(".")[0]
    distribution, extra = PACKAGES.get(top, (top, "train"))
    return f'pip install "keras-sequencer[{extra}]" (or pip install {distribution})'


def _import_error(module):
    try:
        importlib.import_module(module)
    except ImportError as error:  # also a broken install: a dependency of it missing
        return error
    return None


def require(module, purpose):
    """Imports and returns ``module``, or raises :class:`MissingPackageError`:
    ``"<purpose> needs <module> (<why>); install it with: pip install ..."``."""
    error = _import_error(module)
    if error is not None:
        raise MissingPackageError(
            f"{purpose} needs the {module} package ({error}); install it with: {install_hint(module)}."
        ) from None
    return importlib.import_module(module)


def available(module, skipped=None):
    """Whether ``module`` imports; if not and ``skipped`` names what is left out,
    prints one warning line to stderr:
    ``"keras-sequencer: warning: <skipped> skipped: <module> is not installed (...)"``."""
    error = _import_error(module)
    if error is not None and skipped:
        print(
            f"keras-sequencer: warning: {skipped} skipped: {module} is not installed "
            f"({error}); {install_hint(module)}.",
            file=sys.stderr,
        )
    return error is None
