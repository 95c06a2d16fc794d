"""benchmarks/throughput.py: which engines it runs, its table's arithmetic, and
a real run against timm on the current Keras backend (tiny images, so fast)."""

import argparse
import json

import keras
import pytest

from tests.helpers import load_script, requires_timm

throughput = load_script("benchmarks/throughput.py")


def test_engines_put_the_reference_first_and_label_each_implementation():
    args = argparse.Namespace(reference="timm", implementation="keras,fused", backends="jax,torch")
    assert throughput._engines(args) == [
        ("timm", "timm", None),
        ("jax:keras", "jax", "keras"),
        ("jax:fused", "jax", "fused"),
        ("torch:keras", "torch", "keras"),
        ("torch:fused", "torch", "fused"),
    ]
    args.reference = ""
    assert [label for label, *_ in throughput._engines(args)][0] == "jax:keras"
    with pytest.raises(SystemExit, match="Unknown backend 'mxnet'"):
        throughput._engines(argparse.Namespace(reference="timm", implementation="fused", backends="jax,mxnet"))
    with pytest.raises(SystemExit, match="Unknown reference 'torchvision'"):
        throughput._engines(argparse.Namespace(reference="torchvision", implementation="fused", backends="jax"))


def test_rows_take_medians_over_all_rounds_and_ratios_to_the_reference():
    reference = throughput.summarize(
        "timm",
        [
            {"step_s": [1.0, 3.0], "compile_s": 2.0, "peak_rss_mb": 10.0},
            {"step_s": [2.0], "compile_s": 4.0, "peak_rss_mb": 30.0},
        ],
    )
    assert (reference["step_s_median"], reference["compile_s_median"], reference["peak_rss_mb"]) == (2.0, 3.0, 30.0)
    ours = throughput.summarize("torch:fused", [{"step_s": [0.5, 4.0, 0.5], "compile_s": 1.0, "peak_rss_mb": 20.0}])
    failed = throughput.summarize("jax:fused", [{"error": "exit 1: Traceback\nValueError: boom"}])
    assert failed == {"label": "jax:fused", "error": "exit 1: Traceback\nValueError: boom"}
    table = throughput.format_table([reference, ours, failed], batch=8, reference="timm").splitlines()
    assert table[2] == "| timm | 4.00 | 1.00x | 2000 | 3.0 | 30 |"
    assert table[3] == "| torch:fused | 16.00 | 4.00x | 500 | 1.0 | 20 |"
    assert table[4] == "| jax:fused | error: ValueError: boom | | | | |"
    # without a reference row there is no ratio
    assert "| torch:fused | 16.00 | - |" in throughput.format_table([ours], batch=8, reference="timm")


@requires_timm
@pytest.mark.slow
def test_a_run_against_timm_writes_the_table_and_the_json(tmp_path, capsys):
    backend = keras.backend.backend()
    modes = ("infer", "train") if backend == "torch" else ("infer",)  # train compiles for ~1 min elsewhere
    for mode in modes:
        output = tmp_path / f"{mode}.json"
        argv = ["--backends", backend, "--batch", "2", "--img-size", "32", "--mode", mode]
        code = throughput.main(argv + ["--warmup", "0", "--repeats", "2", "--output", str(output)])
        printed = capsys.readouterr().out
        assert code == 0, printed
        report = json.loads(output.read_text())
        rows = {row["label"]: row for row in report["rows"]}
        assert set(rows) == {"timm", f"{backend}:fused"}
        for runs in report["runs"].values():
            assert len(runs) == 1 and len(runs[0]["step_s"]) == 2
            assert all(t > 0 for t in runs[0]["step_s"]) and runs[0]["compile_s"] > 0
        ours, timm_row = rows[f"{backend}:fused"], rows["timm"]
        assert ours["versions"]["keras"] == keras.__version__ and "timm" in timm_row["versions"]
        ratio = timm_row["step_s_median"] / ours["step_s_median"]
        images_per_s = 2 / ours["step_s_median"]
        assert f"| {backend}:fused | {images_per_s:.2f} | {ratio:.2f}x |" in printed
        assert report["args"]["mode"] == mode and report["table"] in printed


@pytest.mark.slow  # the benchmark's engines in subprocesses
def test_a_failing_engine_fails_the_run(tmp_path, capsys):
    output, backend = tmp_path / "failed.json", keras.backend.backend()
    argv = ["--backends", backend, "--reference", "", "--model", "sequencer2d_xl"]
    assert throughput.main(argv + ["--img-size", "32", "--repeats", "1", "--output", str(output)]) == 1
    (row,) = json.loads(output.read_text())["rows"]
    assert "Unknown model 'sequencer2d_xl'" in row["error"]
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(f"| {backend}:fused |")]
    assert line.startswith(f"| {backend}:fused | error: ") and "Unknown model 'sequencer2d_xl'" in line


# ----------------------------------------------------- the target suite --
def test_targets_are_judged_per_engine_and_for_the_best():
    verdicts, best = throughput.judge(
        "infer_b", {"jax": 1.7, "tensorflow": 1.31, "torch": 1.2}, {"jax": 61.0, "torch": 5.0}
    )
    assert verdicts == {"jax": "MISS (first call > 60 s)", "tensorflow": "PASS", "torch": "MISS (< 1.3x)"}
    assert best == "best 1.70x: PASS"
    verdicts, best = throughput.judge("train_b", {"jax": 1.1, "torch": None}, {})
    assert verdicts == {"jax": "PASS", "torch": "MISS (failed)"} and best == "best 1.10x: MISS (< 1.3x)"
    verdicts, best = throughput.judge("infer_1", {"jax": 0.99}, {})
    assert verdicts == {"jax": "MISS (< 1.0x)"} and best == ""
    # bf16 has no ratio target; only the first call is judged
    assert throughput.judge("bf16_infer_b", {"jax": 0.5}, {"jax": 1.0}) == ({"jax": "PASS (first call)"}, "")


def test_targets_table_ratios_and_verdicts():
    timm = {"label": "timm", "step_s_median": 1.0, "compile_s_median": 2.0, "peak_rss_mb": 100.0}
    jax = {"label": "jax", "step_s_median": 0.5, "compile_s_median": 3.0, "peak_rss_mb": 200.0}
    torch = {"label": "torch", "error": "exit 1: boom"}
    table = throughput.targets_table({"infer_b": [timm, jax, torch], "infer_1": [timm, jax]}, batch=8)
    lines = table.splitlines()
    assert lines[2] == "| inference, batch 8 | timm | 8.00 | 1.00x | 2.0 | 100 |  |"
    assert lines[3] == "| inference, batch 8 | jax | 16.00 | 2.00x | 3.0 | 200 | PASS |"
    assert lines[4] == "| inference, batch 8 | torch | error: exit 1: boom | | | | MISS |"
    assert lines[5] == "| inference, batch 8 | best Keras backend | | | | | best 2.00x: PASS |"
    assert lines[7] == "| inference, batch 1 | jax | 2.00 | 2.00x | 3.0 | 200 | PASS |"


@requires_timm
@pytest.mark.slow
@pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="the script's mechanics (its engines are subprocesses): run once, on torch",
)
def test_a_targets_run_builds_the_default_model_and_prints_the_verdicts(tmp_path, capsys, monkeypatch):
    # two of the four cases (latency and bf16), tiny images: the mechanics, not the numbers
    monkeypatch.setattr(throughput, "CASES", tuple(c for c in throughput.CASES if c[0] in ("infer_1", "bf16_infer_b")))
    backend, output = keras.backend.backend(), tmp_path / "targets.json"
    argv = ["--targets", "--backends", backend, "--batch", "2", "--img-size", "32"]
    assert throughput.main(argv + ["--warmup", "0", "--repeats", "1", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(output.read_text())
    assert set(report["rows"]) == {"infer_1", "bf16_infer_b"}
    for runs in report["runs"].values():
        assert set(runs) == {"timm", backend}
        (ours,) = runs[backend]
        assert ours["implementation"] == "default" and ours["resolved"] == ["fused"]
    assert f"| inference, batch 1 | {backend} |" in printed
    assert f"| bf16 inference, batch 2 | {backend} |" in printed
    assert report["table"] in printed
