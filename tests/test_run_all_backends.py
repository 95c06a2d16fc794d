"""tests/run_all_backends.py: which backends run, the closing summary and the per-file
time table."""

import os

import pytest

from keras_sequencer import backend_setup
from tests.helpers import INSTALLED, REPO, run_hidden


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
    proc = run_hidden(tmp_path, code, hide=backend_setup.PREFERENCE)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        'skipping KERAS_BACKEND=jax: jax is not installed (pip install -e ".[jax]")',
        'skipping KERAS_BACKEND=tensorflow: tensorflow is not installed (pip install -e ".[tensorflow]")',
        'skipping KERAS_BACKEND=torch: torch is not installed (pip install -e ".[torch]")',
        'No Keras backend installed: pip install -e ".[jax]" (or [tensorflow], [torch])',
    ]


@pytest.mark.slow  # runs the test command itself in a subprocess
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
    proc = run_hidden(tmp_path, code, hide=hidden, KERAS_SEQUENCER_TEST_JOBS="1", TMPDIR=str(tmp_path / "tmp"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for backend in hidden:
        assert f"skipping KERAS_BACKEND={backend}: " in proc.stdout
    assert f"===== KERAS_BACKEND={keep} =====" in proc.stdout
    # pytest's own lines, streamed with the backend's name, before its summary line
    streamed = [line for line in proc.stdout.splitlines() if line.startswith(f"[{keep}] ")]
    assert any("1 passed" in line for line in streamed), proc.stdout[-3000:]
    assert proc.stdout.index(streamed[0]) < proc.stdout.index(f"===== KERAS_BACKEND={keep} =====")
    assert "1 passed, 0 failed, 0 skipped" in proc.stdout
    assert f"(1 backends: {keep};" in proc.stdout


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
