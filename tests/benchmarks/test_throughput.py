"""benchmarks/throughput.py: which engines it runs, its table's arithmetic, and
a real run against timm on the current Keras backend (tiny images, so fast)."""

import argparse
import json

import keras
import pytest

from tests.helpers import load_script, requires_timm, run_in_the_pass_of

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
        code = throughput.main(argv + ["--warmup", "0", "--repeats", "2", "--no-bound", "--output", str(output)])
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
        "infer_b", {"jax": 1.7, "tensorflow": 1.01, "torch": 0.99}, {"jax": 11.0, "torch": 5.0}
    )
    assert verdicts == {"jax": "MISS (first call > 10 s)", "tensorflow": "PASS", "torch": "MISS (< 1.0x)"}
    assert best == ""
    # the GEMM bound raises inference's floor to 85 % of it, never lowers it under 1.0x
    verdicts, _ = throughput.judge("infer_b", {"jax": 1.6, "torch": 1.7}, {}, bound_ratio=2.0)
    assert verdicts == {"jax": "MISS (< 1.7x)", "torch": "PASS"}
    assert throughput.judge("infer_b", {"jax": 0.99}, {}, bound_ratio=1.1)[0] == {"jax": "MISS (< 1.0x)"}
    # a training step has 30 s for its first call, and a target for the best backend
    verdicts, best = throughput.judge("train_b", {"jax": 1.1, "torch": None}, {"jax": 29.0})
    assert verdicts == {"jax": "PASS", "torch": "MISS (failed)"} and best == "best 1.10x: MISS (< 1.2x)"
    assert throughput.judge("train_b", {"jax": 1.3}, {"jax": 31.0}) == (
        {"jax": "MISS (first call > 30 s)"},
        "best 1.30x: PASS",
    )
    verdicts, best = throughput.judge("infer_1", {"jax": 0.99}, {})
    assert verdicts == {"jax": "MISS (< 1.0x)"} and best == ""
    # bf16 has no ratio target; only the first call is judged
    assert throughput.judge("bf16_infer_b", {"jax": 0.5}, {"jax": 1.0}) == ({"jax": "PASS (first call)"}, "")


def test_targets_table_ratios_verdicts_and_the_bound():
    timm = {"label": "timm", "step_s_median": 1.0, "compile_s_median": 2.0, "peak_rss_mb": 100.0}
    jax = {"label": "jax", "step_s_median": 0.5, "compile_s_median": 3.0, "peak_rss_mb": 200.0}
    torch = {"label": "torch", "error": "exit 1: boom"}
    bound = {"bound_s": 0.4, "peak_flops": 50e9}  # 2.5x timm: the floor is 0.85 * 2.5 = 2.12x
    table = throughput.targets_table({"infer_b": [timm, jax, torch], "infer_1": [timm, jax]}, 8, {"infer_b": bound})
    lines = table.splitlines()
    assert lines[2] == "| inference, batch 8 | timm | 8.00 | 1.00x | 40 % | 2.0 | 100 |  |"
    assert lines[3] == "| inference, batch 8 | jax | 16.00 | 2.00x | 80 % | 3.0 | 200 | MISS (< 2.12x) |"
    assert lines[4] == "| inference, batch 8 | torch | error: exit 1: boom | | | | | MISS |"
    assert lines[5] == "| inference, batch 8 | GEMM bound (50 GFLOP/s) | | 2.50x | 100 % | | | |"
    assert lines[6] == "| inference, batch 1 | timm | 1.00 | 1.00x |  | 2.0 | 100 |  |"
    assert lines[7] == "| inference, batch 1 | jax | 2.00 | 2.00x |  | 3.0 | 200 | PASS |"


# ----------------------------------------------------------- the bound --
@requires_timm
def test_the_dense_gemm_count_is_what_timm_runs_as_gemms():
    """The analytic count against torch's FLOP counter on timm's model (its
    linear layers and convolutions) plus its LSTMs' input projections (inside
    the fused LSTM op, which the counter does not see)."""
    run_in_the_pass_of("torch")  # torch and timm only: the same in every pass
    import timm
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    profile_forward = load_script("benchmarks/profile_forward.py")
    arch = dict(layers=(1, 2), patch_sizes=(4, 2), embed_dims=(8, 12), hidden_sizes=(4, 6), mlp_ratios=(3.0, 2.0))
    model = timm.create_model("sequencer2d_s", pretrained=False, num_classes=7, **arch).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(2, 3, 32, 32))
    tokens = {0: 8 * 8, 1: 4 * 4}
    expected = counter.get_total_flops() + profile_forward.lstm_projection_flops(model, 2, tokens)
    assert throughput.dense_gemm_flops(arch, 2, 32, classes=7) == expected
    assert throughput.dense_gemm_flops({**arch, "union": "add"}, 2, 32, classes=7) < expected  # fc of 2U, not 4U
    with pytest.raises(SystemExit, match="2-D token mixer"):
        throughput.dense_gemm_flops({**arch, "token_mixer": "1d"}, 2, 32)


def test_the_bound_lines_and_the_peak_of_the_best_round():
    args = argparse.Namespace(model="sequencer2d_s", batch=2, img_size=32, mode="train", device="cpu", precision="fp32")
    peaks = [{"peak_flops": 40e9, "rates": {"a": 40e9}}, None, {"peak_flops": 50e9, "rates": {"b": 50e9}}]
    bound = throughput.gemm_bound(args, peaks)
    arch = throughput.load_variants().MODEL_CONFIGS["sequencer2d_s"]
    assert bound["flops"] == 3 * throughput.dense_gemm_flops(arch, 2, 32)  # forward + two gradients
    assert bound["peak_flops"] == 50e9 and bound["bound_s"] == bound["flops"] / 50e9
    assert throughput.gemm_bound(args, [None]) is None
    assert throughput.gemm_bound(argparse.Namespace(**{**vars(args), "precision": "bf16"}), peaks) is None
    rows = [
        {"label": "timm", "step_s_median": 4 * bound["bound_s"]},
        {"label": "torch", "step_s_median": 2 * bound["bound_s"]},
    ]
    lines = throughput.bound_lines(rows + [{"label": "jax", "error": "x"}], bound, "timm")
    assert lines[1:] == ["bound ratio: 4.00x timm", "  timm: 25 % of the bound", "  torch: 50 % of the bound"]
    assert "GFLOP/s (fp32 peak)" in lines[0]


def test_the_gemm_peak_is_a_measured_rate():
    run_in_the_pass_of("torch")  # torch only: the same in every pass
    args = argparse.Namespace(model="sequencer2d_s", batch=1, img_size=28, repeats=1)
    peak = throughput._run_gemm_peak(args)
    shapes = ("2048x2048x2048", "16x192x192")
    assert set(peak["rates"]) == {f"{library} {shape}" for library in ("torch", "numpy") for shape in shapes}
    assert peak["peak_flops"] == max(peak["rates"].values()) > 1e8


@requires_timm
@pytest.mark.slow
def test_a_targets_run_builds_the_default_model_and_prints_the_verdicts(tmp_path, capsys):
    # two of the four cases (latency and bf16, by --cases), tiny images: the mechanics, not the numbers.
    # The engines are subprocesses (torch's here): run once, in the pass with room to spare.
    run_in_the_pass_of("jax")
    backend, output = "torch", tmp_path / "targets.json"
    argv = ["--targets", "--cases", "infer_1,bf16_infer_b", "--backends", backend, "--batch", "2", "--img-size", "32"]
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


def test_targets_cases_must_be_known(capsys):
    with pytest.raises(SystemExit):
        throughput.main(["--targets", "--cases", "infer_b,train"])
    assert "--cases: unknown case(s) train; choose from infer_b" in capsys.readouterr().err
