"""Optional packages: checked before a run does any work, named with the extra
that installs them. The one place that asks whether a package is installed.

A run that needs a package which is not installed fails at once with one line
(:class:`MissingPackageError`, a ``ValueError`` as well, so command-line
front ends print it without a traceback); a convenience such as a plot is
skipped with one warning line instead (:func:`available`).

Two checks, by cost: :func:`require` imports the package (a broken install,
one missing a dependency of its own, fails there too); :func:`require_installed`
only looks the packages up, for checks that run before the work starts
(TensorFlow takes seconds to import, and the export imports it anyway).
"""

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

# import name -> (pip distribution, the keras-sequencer extra that installs it)
PACKAGES = {
    "tensorflow": ("tensorflow-cpu", "train"),
    "tensorflow_datasets": ("tensorflow-datasets", "train"),
    "sklearn": ("scikit-learn", "train"),
    "matplotlib": ("matplotlib", "train"),
    "PIL": ("pillow", "images"),
    "importlib_resources": ("importlib-resources", "train"),  # tensorflow-datasets needs it
    "keras_hub": ("keras-hub", "hub"),
    "tf2onnx": ("tf2onnx", "export"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "ai_edge_litert": ("ai-edge-litert", "export"),
}


class MissingPackageError(ImportError, ValueError):
    """An optional package a run needs is not installed (or fails to import)."""


def distribution(module: str) -> str:
    """The pip distribution that provides ``module`` (an import name)."""
    top = module.split(".")[0]
    return PACKAGES.get(top, (top, "train"))[0]


def install_hint(*modules: str, extra: str | None = None) -> str:
    """``pip install "keras-sequencer[EXTRA]" (or pip install DIST ...)`` for
    ``modules`` (import names); ``extra`` defaults to the first one's."""
    if extra is None:
        extra = PACKAGES.get(modules[0].split(".")[0], (None, "train"))[1]
    return f'pip install "keras-sequencer[{extra}]" (or pip install {" ".join(distribution(m) for m in modules)})'


def installed(module: str) -> bool:
    """Whether ``module`` can be found on the path, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or sys.modules[name] = None
        return False


def _import_error(module):
    try:
        importlib.import_module(module)
    except ImportError as error:  # also a broken install: a dependency of it missing
        return error
    return None


def require(module: str, purpose: str) -> ModuleType:
    """Imports and returns ``module``, or raises :class:`MissingPackageError`:
    ``"<purpose> needs the <module> package (<why>); install it with: pip install ..."``."""
    error = _import_error(module)
    if error is not None:
        raise MissingPackageError(
            f"{purpose} needs the {module} package ({error}); install it with: {install_hint(module)}."
        ) from None
    return importlib.import_module(module)


def require_installed(modules: Sequence[str], purpose: str = "", extra: str | None = None) -> None:
    """Raises :class:`MissingPackageError` naming every one of ``modules`` that
    is not installed, all at once (one extra installs them):
    ``"<purpose> needs tf2onnx, which is not installed: pip install ..."``
    (``purpose`` empty: the line starts with ``needs``). Imports nothing."""
    missing = [module for module in modules if not installed(module)]
    if missing:
        names = ", ".join(distribution(module) for module in missing)
        verb = "is" if len(missing) == 1 else "are"
        raise MissingPackageError(
            f"{purpose} needs {names}, which {verb} not installed: {install_hint(*missing, extra=extra)}".lstrip()
        )


def available(module: str, skipped: str | None = None) -> bool:
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
