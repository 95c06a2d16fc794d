"""Importing keras_sequencer (and the keras-sequencer command) picks an installed
Keras backend, or fails with one line saying what to install.

The subprocess tests hide backend packages with an import hook, so they run
whatever is installed here; each needs at least one real backend.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_sequencer import backend_setup
from keras_sequencer.backend_setup import INSTALL_HINT, BackendNotFoundError, choose_backend

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALLED = [b for b in backend_setup.PREFERENCE if importlib.util.find_spec(b) is not None]

# Makes the packages named in HIDE_MODULES (comma-separated) unimportable, as if
# not installed, then runs the rest of the script.
HIDE = textwrap.dedent(
    """
    import importlib.machinery, os, sys

    HIDDEN = {m for m in os.environ.get("HIDE_MODULES", "").split(",") if m}

    class HidingPathFinder(importlib.machinery.PathFinder):
        # sys.path's finder, blind to the hidden packages: find_spec gives None and
        # import raises ModuleNotFoundError, exactly as when they are not installed.
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return None
            return super().find_spec(name, path, target)

    sys.meta_path[:] = [
        HidingPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path
    ]
    """
)


def _run(tmp_path, code, hide=(), script_name="check.py", **env):
    """Runs ``code`` (after the hiding hook) as ``tmp_path/script_name`` with a fresh
    ``KERAS_HOME``; returns the CompletedProcess."""
    script = tmp_path / script_name
    script.write_text(HIDE + textwrap.dedent(code))
    environ = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    environ.update(PYTHONPATH=REPO, HIDE_MODULES=",".join(hide), KERAS_HOME=str(tmp_path / "keras_home"), **env)
    return subprocess.run(
        [sys.executable, str(script)], env=environ, cwd=str(tmp_path), capture_output=True, text=True, timeout=300
    )


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
    proc = _run(tmp_path, "import keras_sequencer, keras; print('backend', keras.backend.backend())", hide=hidden)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"backend {expected}"


def test_import_without_any_backend_fails_with_one_line(tmp_path):
    proc = _run(
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
    proc = _run(
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


def test_run_all_backends_plan():
    from tests.helpers import load_script

    runner = load_script("tests/run_all_backends.py")
    run, skipped = runner.plan(["jax", "tensorflow", "torch"], is_installed=lambda m: m == "torch")
    assert run == ["torch"]
    assert skipped == {
        "jax": 'jax is not installed (pip install -e ".[jax]")',
        "tensorflow": 'tensorflow is not installed (pip install -e ".[tensorflow]")',
    }
    assert runner.plan(["numpy"], is_installed=lambda m: True)[0] == []


def test_run_all_backends_finds_the_summary_before_exit_noise():
    from tests.helpers import load_script

    runner = load_script("tests/run_all_backends.py")
    output = "tests/a.py ..F\n==== 1 failed, 2 passed, 3 skipped in 9.50s ====\nW0000 exit log\n"
    assert runner.pytest_summary(output) == "==== 1 failed, 2 passed, 3 skipped in 9.50s ===="
    assert runner.pytest_summary("..\n2 passed in 1.00s\n") == "2 passed in 1.00s"
    assert runner.pytest_summary("Fatal Python error: Segmentation fault\n") == ""


RUNNER = """
import runpy
sys.argv = ["run_all_backends.py", *{argv!r}]
runpy.run_path({path!r}, run_name="__main__")
"""


def test_run_all_backends_without_any_backend_fails(tmp_path):
    code = RUNNER.format(argv=[], path=os.path.join(REPO, "tests", "run_all_backends.py"))
    proc = _run(tmp_path, code, hide=backend_setup.PREFERENCE)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        'skipping KERAS_BACKEND=jax: jax is not installed (pip install -e ".[jax]")',
        'skipping KERAS_BACKEND=tensorflow: tensorflow is not installed (pip install -e ".[tensorflow]")',
        'skipping KERAS_BACKEND=torch: torch is not installed (pip install -e ".[torch]")',
        'No Keras backend installed: pip install -e ".[jax]" (or [tensorflow], [torch])',
    ]


@pytest.mark.skipif(not INSTALLED, reason="no Keras backend installed")
def test_run_all_backends_runs_the_installed_subset(tmp_path):
    """With one backend left visible, only it runs (a one-test selection) and the
    others are named as skipped."""
    keep = INSTALLED[-1]
    hidden = [b for b in backend_setup.PREFERENCE if b != keep]
    test = os.path.join(REPO, "tests", "test_package.py") + "::test_keras_backend_is_used_as_set"
    code = RUNNER.format(
        argv=[test, "-q", "-p", "no:cacheprovider"], path=os.path.join(REPO, "tests", "run_all_backends.py")
    )
    # The runner's --basetemp lives under the temp folder; point that at a fresh
    # one, or it could be a parent of tmp_path (the torch pass of the runner itself).
    (tmp_path / "tmp").mkdir()
    proc = _run(tmp_path, code, hide=hidden, KERAS_SEQUENCER_TEST_JOBS="1", TMPDIR=str(tmp_path / "tmp"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for backend in hidden:
        assert f"skipping KERAS_BACKEND={backend}: " in proc.stdout
    assert f"===== KERAS_BACKEND={keep} =====" in proc.stdout
    assert "1 passed, 0 failed, 0 skipped" in proc.stdout
    assert f"(1 backends: {keep};" in proc.stdout


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
    proc = _run(tmp_path, code, hide=hidden)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-3:-1] == [f"backend {keep}", "black.png"] and lines[-1].startswith("  ")
    for backend in hidden:
        assert f"'{backend}'" not in proc.stderr


def test_run_all_backends_sums_each_files_time_from_the_junit_reports(tmp_path):
    from tests.helpers import load_script

    runner = load_script("tests/run_all_backends.py")
    report = tmp_path / "jax.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="t1" time="1.5"/>'
        '<testcase classname="tests.test_a" name="t2" time="2.0"/>'
        '<testcase classname="tests.test_b.TestGroup" name="t3" time="4.25"/>'
        "</testsuite></testsuites>"
    )
    jax = runner.seconds_per_file(str(report))
    assert jax == {"tests/test_a.py": 3.5, "tests/test_b.py": 4.25}
    assert runner.seconds_per_file(str(tmp_path / "missing.xml")) == {}
    table = runner.time_table({"jax": jax, "torch": {"tests/test_a.py": 10.0}}).splitlines()
    assert table[1].split() == ["tests/test_a.py", "4", "10", "14"]  # the longest overall first
    assert table[2].split() == ["tests/test_b.py", "4", "0", "4"]
