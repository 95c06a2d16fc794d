"""benchmarks/serving.py: timm, the backend and onnxruntime side by side."""

import json

import pytest

from tests.helpers import load_script, requires_timm, run_in_the_pass_of

serving = load_script("benchmarks/serving.py")


@requires_timm
@pytest.mark.slow
def test_serving_runs_timm_the_backend_and_onnxruntime_side_by_side(tmp_path, capsys):
    run_in_the_pass_of("jax")
    backend, output = "torch", tmp_path / "serving.json"
    argv = [
        "--backends",
        backend,
        "--img-size",
        "32",
        "--batches",
        "1,2",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--rounds",
        "2",
    ]
    code = serving.main(argv + ["--output", str(output)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(output.read_text())
    assert list(report["rows"]) == ["timm", backend, "onnxruntime"]
    table = report["table"].splitlines()
    assert table[0] == "| engine | batch 1 img/s | batch 1 vs timm | batch 2 img/s | batch 2 vs timm |"
    for label, line in zip(report["rows"], table[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == label and len(cells) == 5
        for batch, (ips, ratio) in zip((1, 2), (cells[1:3], cells[3:5])):
            row = report["rows"][label][str(batch)]
            assert float(ips) == pytest.approx(batch / row["step_s_median"], abs=0.01)
            # the ratio comes from the unrounded step times, printed to 2 decimals
            expected = report["rows"]["timm"][str(batch)]["step_s_median"] / row["step_s_median"]
            assert ratio.endswith("x") and abs(float(ratio[:-1]) - expected) <= 0.0051
    # the ONNX engine ran the exported model, which reproduces Keras's logits
    assert len(report["raw"]["onnx"]) == 2  # one fresh process per round
    for batch in ("1", "2"):
        runs = [rounds[batch] for rounds in report["raw"]["onnx"]]
        for run in runs:
            assert run["max_difference"] < 1e-4 and len(run["step_s"]) == 1
        steps = sorted(run["step_s"][0] for run in runs)  # the median pools both rounds
        assert report["rows"]["onnxruntime"][batch]["step_s_median"] == pytest.approx(sum(steps) / 2)
    assert report["table"] in printed
