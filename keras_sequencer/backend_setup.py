"""Chooses a Keras backend that is installed, before Keras is first imported.

Keras falls back to TensorFlow when neither ``KERAS_BACKEND`` nor
``keras.json`` names a backend, and on its first import it writes that
default into ``~/.keras/keras.json`` (or ``$KERAS_HOME/keras.json``). With
only JAX or PyTorch installed, ``import keras`` would then fail deep inside
Keras. So, when ``keras_sequencer`` is imported before Keras:

- ``KERAS_BACKEND`` set: used as it is; if it names no Keras backend (a
  typo), or jax, tensorflow or torch and that package is not installed,
  :class:`BackendNotFoundError`.
- else ``keras.json`` names an installed backend: used as it is.
- else (no ``keras.json``, or it names a backend that is not installed, as the
  default Keras writes there): the first installed of :data:`PREFERENCE`
  (tensorflow, jax, torch) is set in ``os.environ["KERAS_BACKEND"]``.
- none installed: :class:`BackendNotFoundError`.

Once Keras is imported its backend is fixed, and nothing is changed. This
module imports nothing of Keras or of the package.
"""

import importlib.util
import json
import os
import sys

# Backends tried, in order, when none is chosen; the package each one needs.
PREFERENCE = ("tensorflow", "jax", "torch")
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# Every backend Keras knows (``KERAS_BACKEND`` values); numpy and openvino run inference only.
KERAS_BACKENDS = ("jax", "tensorflow", "torch", "numpy", "openvino")
INSTALL_HINT = (
    'keras-sequencer needs a Keras backend: pip install "keras-sequencer[jax]" '
    "(or [tensorflow], [torch]) and set KERAS_BACKEND=jax"
)


class BackendNotFoundError(ImportError):
    """No usable Keras backend is installed (or ``KERAS_BACKEND`` names a missing one)."""


def is_installed(backend):
    """Whether the package behind ``backend`` can be imported (without importing it)."""
    package = BACKEND_PACKAGES.get(backend)
    if package is None:  # numpy, openvino, ...: left to Keras
        return True
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def keras_config_backend(environ):
    """The ``backend`` of Keras's ``keras.json`` (where Keras itself looks), or ``None``."""
    if "KERAS_HOME" in environ:
        keras_dir = environ["KERAS_HOME"]
    else:
        base = os.path.expanduser("~")
        keras_dir = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(os.path.expanduser(keras_dir), "keras.json")) as f:
            backend = json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None
    return backend if isinstance(backend, str) and backend else None


def choose_backend(environ=None, installed=is_installed, keras_imported=None):
    """Makes sure Keras will start on an installed backend (see the module docstring).

    Args:
        environ: the environment to read and update (default ``os.environ``).
        installed: ``backend -> bool``, whether its package is installed.
        keras_imported: whether Keras is already imported (default: looked up
            in ``sys.modules``); then nothing is checked or changed.

    Returns:
        The backend Keras will use, or ``None`` when Keras was already imported.

    Raises:
        BackendNotFoundError: no usable backend (one-line message saying what
            to install and set).
    """
    environ = os.environ if environ is None else environ
    if keras_imported is None:
        keras_imported = "keras" in sys.modules
    if keras_imported:
        return None
    chosen = environ.get("KERAS_BACKEND")
    if chosen:
        if chosen not in KERAS_BACKENDS:
            raise BackendNotFoundError(
                f"KERAS_BACKEND={chosen} is not a Keras backend; set it to jax, tensorflow or torch "
                f"(Keras also knows {', '.join(KERAS_BACKENDS[3:])}), or unset it"
            )
        if not installed(chosen):
            raise BackendNotFoundError(f"{INSTALL_HINT} (KERAS_BACKEND={chosen}: {chosen} is not installed)")
        return chosen
    configured = keras_config_backend(environ)
    if configured and installed(configured):
        return configured
    for backend in PREFERENCE:
        if installed(backend):
            environ["KERAS_BACKEND"] = backend
            return backend
    raise BackendNotFoundError(INSTALL_HINT)


def invoked_as_command(argv=None):
    """Whether this process is the ``keras-sequencer`` command: its console script,
    or ``python -m keras_sequencer...`` (``argv[0]`` is ``"-m"`` while the package
    of the module to run is imported)."""
    argv = sys.argv if argv is None else argv
    name = os.path.basename(argv[0]) if argv and argv[0] else ""
    return name in ("keras-sequencer", "keras-sequencer.exe", "keras-sequencer-script.py", "-m")
