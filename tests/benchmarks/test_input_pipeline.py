"""benchmarks/input_pipeline.py: its table's arithmetic, and a real run of both
engines on a few tiny synthetic JPEGs (no timing is compared)."""

import json

import pytest

from tests.helpers import load_script, requires_timm, run_in_the_pass_of

input_pipeline = load_script("benchmarks/input_pipeline.py")


def test_rows_take_medians_and_cores_come_from_images_per_cpu_second():
    rates = {
        "timm": [dict(wall=100.0, cpu=200.0), dict(wall=300.0, cpu=400.0), dict(wall=200.0, cpu=300.0)],
        "ours": [dict(wall=50.0, cpu=150.0), dict(wall=150.0, cpu=100.0), dict(wall=400.0, cpu=600.0)],
    }
    (row,) = input_pipeline.rows_from_rates({("b", 2): rates}, gpu_rate=462.0)
    assert (row["timm"], row["ours"], row["timm_cpu"], row["ours_cpu"]) == (200.0, 150.0, 300.0, 150.0)
    assert row["ratio"] == 0.75 and row["ratio_cpu"] == 0.5
    assert row["cores_1"] == (462.0 / 300.0, 462.0 / 150.0) and row["cores_8"] == (8 * 462.0 / 300.0, 8 * 462.0 / 150.0)
    table = input_pipeline.format_table([row]).splitlines()
    assert table[2] == "| b | 2 | 200.0 | 150.0 | 0.75x | 300.0 | 150.0 | 0.50x | 1.5 / 3.1 | 12.3 / 24.6 |"


def test_bad_flags_are_one_line_errors(capsys):
    for argv in (["--recipes", "a,x"], ["--threads", "one"], ["--batch", "3"]):
        with pytest.raises(SystemExit):
            input_pipeline.parse_args(argv)
        assert "error: --" in capsys.readouterr().err


@requires_timm
@pytest.mark.slow
def test_a_run_measures_both_engines_and_tabulates_what_it_measured(tmp_path, capsys):
    run_in_the_pass_of("jax")  # tf.data and torch whatever the Keras backend: run once
    images = input_pipeline.write_images(str(tmp_path / "images"), 8, size=(40, 30), classes=2)
    output = tmp_path / "report.json"
    argv = ["--images", images, "--recipes", "a,c", "--threads", "1", "--batch", "2", "--rounds", "1"]
    assert input_pipeline.main(argv + ["--output", str(output)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(output.read_text())
    assert [(run["recipe"], run["threads"]) for run in report["runs"]] == [("a", 1), ("c", 1)]
    for run in report["runs"]:
        assert set(run["rates"]) == {"timm", "ours"}
        assert all(
            len(rounds) == 1 and rounds[0]["wall"] > 0 and rounds[0]["cpu"] > 0 for rounds in run["rates"].values()
        )
    results = {(run["recipe"], run["threads"]): run["rates"] for run in report["runs"]}
    assert report["rows"] == json.loads(json.dumps(input_pipeline.rows_from_rates(results)))
    assert report["table"] in printed and input_pipeline.format_table(report["rows"]) == report["table"]
    assert "CPU: " in printed and '"timm": ' in printed
