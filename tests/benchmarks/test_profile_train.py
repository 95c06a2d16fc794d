"""benchmarks/profile_train.py: the training step by phase, timm against the backend."""

import pytest

from tests.helpers import load_script, requires_timm, run_in_the_pass_of

profile_train = load_script("benchmarks/profile_train.py")


def test_training_phases_are_differences_of_the_nested_functions():
    results = {
        "timm": {"forward": [2.0, 1.0], "forward + backward": [3.0, 3.0], "step": [4.0, 4.0]},
        "jax": {
            "forward": [9.0, 0.5],
            "forward + backward": [50.0, 1.5],
            "step": [60.0, 2.0],
            "jax compilation (trace, lower, XLA compile) s": [[1.0, 0.5, 7.0], [2.0, 1.0, 40.0]],
        },
        "torch": {"error": "exit 1: ValueError: boom"},
        "tensorflow": {
            "forward": [9.0, 0.5],
            "forward + backward": [20.0, 1.5],
            "step": [60.0, 2.0],
            profile_train.TF_SPLIT: [25.5, 37000, 28.25, 8.0],
        },
    }
    lines = profile_train.table(results).splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines if line.startswith("| ")}
    assert rows["phase: backward"] == "| phase: backward | 2000 | 1000 | exit 1: ValueError: boom | 1000 |"
    assert rows["phase: update (optimizer + step overhead)"].startswith(
        "| phase: update (optimizer + step overhead) | 1000 | 500 |"
    )
    assert rows["first call: step"].startswith("| first call: step | 4000 | 60000 |")
    assert rows["step vs timm"] == "| step vs timm | 1.00x | 2.00x | — | 2.00x |"
    assert (
        "tensorflow, train_step as one tf.function: trace 25.5 s (37000 graph nodes), first run 28.2 s, next run 8.0 s"
        in lines
    )
    assert "jax, forward + backward: trace 2.0 s, lower 1.0 s, XLA compile 40.0 s" in lines


@requires_timm
@pytest.mark.slow
def test_profile_train_times_timm_and_the_backend_by_phase(capsys):
    run_in_the_pass_of("jax")
    results = profile_train.main(["--engines", "timm,torch", "--batch", "2", "--img-size", "32", "--repeats", "1"])
    assert set(results) == {"timm", "torch"}
    for engine, timed in results.items():
        assert "error" not in timed, (engine, timed)
        for name in profile_train.FUNCTIONS:
            first, median = timed[name]
            assert first > 0 and median > 0
    # the printed table is the one computed from these timings (no ordering of
    # the times is asserted: at this size, one repeat is within the noise)
    printed = capsys.readouterr().out
    assert profile_train.table(results) in printed
    assert "| phase: backward |" in printed
