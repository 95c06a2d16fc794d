"""Importing keras_sequencer (and the keras-sequencer command) picks an installed
Keras backend, or fails with one line saying what to install.

The subprocess tests hide backend packages with an import hook, so they run
whatever is installed here; each needs at least one real backend.
"""

import importlib
import json
import pathlib
import re

import pytest

from keras_sequencer import backend_setup
from keras_sequencer.backend_setup import INSTALL_HINT, BackendNotFoundError, choose_backend
from tests.helpers import INSTALLED, REPO, run_hidden

# ---------------------------------------------------------------- the choice, without processes


def test_keras_backend_is_used_as_set():
    environ = {"KERAS_BACKEND": "torch"}
    assert choose_backend(environ, installed=lambda b: True, keras_imported=False) == "torch"
    assert environ == {"KERAS_BACKEND": "torch"}


def test_missing_keras_backend_is_one_line():
    with pytest.raises(BackendNotFoundError) as info:
        choose_backend({"KERAS_BACKEND": "jax"}, installed=lambda b: b != "jax", keras_imported=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(INSTALL_HINT) and "KERAS_BACKEND=jax" in message


def test_unknown_keras_backend_is_named_in_one_line():
    with pytest.raises(BackendNotFoundError) as info:
        choose_backend({"KERAS_BACKEND": "jaxx"}, installed=lambda b: True, keras_imported=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("KERAS_BACKEND=jaxx is not a Keras backend; set it to jax, tensorflow or torch")


def test_first_installed_backend_when_none_is_chosen(tmp_path):
    for installed, expected in [
        ({"tensorflow", "jax", "torch"}, "tensorflow"),
        ({"jax", "torch"}, "jax"),
        ({"torch"}, "torch"),
    ]:
        environ = {"KERAS_HOME": str(tmp_path / "empty")}
        assert choose_backend(environ, installed=installed.__contains__, keras_imported=False) == expected
        assert environ["KERAS_BACKEND"] == expected


def test_keras_json_backend(tmp_path):
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "torch"}))
    environ = {"KERAS_HOME": str(tmp_path)}
    # installed: used as it is (KERAS_BACKEND not set)
    assert choose_backend(environ, installed=lambda b: True, keras_imported=False) == "torch"
    assert "KERAS_BACKEND" not in environ
    # not installed (e.g. Keras's own default written there): the first installed one
    assert choose_backend(environ, installed=lambda b: b == "jax", keras_imported=False) == "jax"
    assert environ["KERAS_BACKEND"] == "jax"


def test_nothing_installed_or_keras_already_imported(tmp_path):
    with pytest.raises(BackendNotFoundError) as info:
        choose_backend({"KERAS_HOME": str(tmp_path)}, installed=lambda b: False, keras_imported=False)
    assert str(info.value) == INSTALL_HINT
    environ = {}
    assert choose_backend(environ, installed=lambda b: False, keras_imported=True) is None
    assert environ == {}


# ---------------------------------------------------------------- real processes


@pytest.mark.skipif(not INSTALLED, reason="no Keras backend installed")
def test_import_picks_an_installed_backend(tmp_path):
    """KERAS_BACKEND unset and Keras's default (tensorflow) hidden: the next
    installed backend runs."""
    hidden = ["tensorflow"]
    expected = next((b for b in INSTALLED if b not in hidden), None)
    if expected is None:
        pytest.skip("only tensorflow is installed")
    proc = run_hidden(tmp_path, "import keras_sequencer, keras; print('backend', keras.backend.backend())", hide=hidden)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"backend {expected}"


def test_import_without_any_backend_fails_with_one_line(tmp_path):
    proc = run_hidden(
        tmp_path,
        """
        try:
            import keras_sequencer
        except ImportError as error:
            print("ImportError:", error)
        """,
        hide=backend_setup.PREFERENCE,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ImportError: {INSTALL_HINT}"
    assert "keras" not in proc.stderr  # Keras was never imported


@pytest.mark.parametrize("keras_backend", [None, "torch"])
def test_command_without_a_backend_prints_one_line(tmp_path, keras_backend):
    """The keras-sequencer console script (same code as pip's) with no usable
    backend: exactly one line on stderr, exit 1."""
    env = {} if keras_backend is None else {"KERAS_BACKEND": keras_backend}
    hide = backend_setup.PREFERENCE if keras_backend is None else [keras_backend]
    proc = run_hidden(
        tmp_path,
        """
        from keras_sequencer.cli import main
        sys.exit(main())
        """,
        hide=hide,
        script_name="keras-sequencer",
        **env,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"keras-sequencer: error: {INSTALL_HINT}")
    if keras_backend:
        assert line.endswith(f"(KERAS_BACKEND={keras_backend}: {keras_backend} is not installed)")


def test_public_names():
    import keras_sequencer

    for name in (
        "layers",
        "Sequencer2D",
        "Sequencer2DS",
        "Sequencer2DM",
        "Sequencer2DL",
        "VanillaSequencer",
        "SequencerModel",
        "MODEL_CONFIGS",
        "MODEL_REGISTRY",
        "create_model",
        "list_models",
        "feature_extractor",
        "decode_predictions",
        "load_image",
        "preprocess_input",
        "__version__",
    ):
        assert hasattr(keras_sequencer, name), name
    from keras_sequencer.models import IMAGENET_MEAN, IMAGENET_STD
    from keras_sequencer.preprocessing import IMAGENET_MEAN as MEAN
    from keras_sequencer.preprocessing import IMAGENET_STD as STD

    assert (IMAGENET_MEAN, IMAGENET_STD) == (MEAN, STD)


# ---------------------------------------------------------------- tests/run_all_backends.py


@pytest.mark.slow  # a subprocess that runs the command on one backend
@pytest.mark.skipif(not INSTALLED, reason="no Keras backend installed")
def test_predict_with_only_one_backend_installed(tmp_path):
    """``keras-sequencer predict`` end to end with the other backends hidden
    (KERAS_BACKEND unset): nothing on the way imports a backend it does not need."""
    keep = INSTALLED[-1]
    hidden = [b for b in backend_setup.PREFERENCE if b != keep]
    code = """
        import dataclasses
        import numpy as np
        from PIL import Image
        from keras_sequencer import cli, registry, variants
        from tests.helpers import TINY_ARCH

        variants.VARIANTS["tiny"] = dataclasses.replace(
            variants.VARIANTS["sequencer2d_s"], name="tiny", arch=dict(TINY_ARCH), input_size=28, weights=None)
        registry.create_model("tiny", classes=1000).save_weights("tiny.weights.h5")
        Image.fromarray(np.zeros((30, 40, 3), "uint8")).save("black.png")
        import keras
        print("backend", keras.backend.backend())
        sys.exit(cli.main(["predict", "black.png", "--model", "tiny", "--weights", "tiny.weights.h5", "--top", "1"]))
        """
    proc = run_hidden(tmp_path, code, hide=hidden)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-3:-1] == [f"backend {keep}", "black.png"] and lines[-1].startswith("  ")
    for backend in hidden:
        assert f"'{backend}'" not in proc.stderr


# ---------------------------------------------------------------- the documented layout


def documented_layout(text):
    """The files the package layout of docs/development.md names, as paths under
    ``keras_sequencer/`` (``"training/data.py"``): its lines indented by two
    (the package) or four (the sub-package above) spaces, each starting with
    one name or a comma-separated list of names."""
    lines = text.split("## Package layout", 1)[1].split("```")[1].splitlines()
    start = lines.index("keras_sequencer/")
    files, folder = set(), ""
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip(" "))
        if indent == 0:
            break
        if indent not in (2, 4):
            continue  # a description carried over from the line above
        names = re.split(r"\s{2,}", line.strip())[0].split(", ")
        if indent == 2:
            folder = ""
        for name in names:
            if name.endswith("/"):
                folder = name
            else:
                files.add(folder + name)
    return files


def test_development_layout_names_every_module_of_the_package():
    documented = documented_layout((pathlib.Path(REPO) / "docs" / "development.md").read_text())
    package = pathlib.Path(REPO) / "keras_sequencer"
    actual = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert sorted(actual - documented) == [], "in the package but not in docs/development.md's layout"
    assert sorted(documented - actual) == [], "in docs/development.md's layout but not in the package"


@pytest.mark.parametrize(
    "alias, module",
    [
        ("keras_sequencer.data", "keras_sequencer.training.data"),
        ("keras_sequencer.distribute", "keras_sequencer.training.distribute"),
        ("keras_sequencer.validation", "keras_sequencer.evaluation"),
    ],
)
def test_old_module_names_are_the_same_modules(alias, module):
    assert importlib.import_module(alias) is importlib.import_module(module)
