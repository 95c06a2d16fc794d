"""benchmarks/recipe_equivalence.py: a smoke run, the side-by-side report, and
RESULTS.md's recipe tables recomputed from the committed runs."""

import keras
import numpy as np
import pytest

from tests.helpers import REPO, load_script


def _recipe_benchmark():
    return load_script("benchmarks/recipe_equivalence.py")


@pytest.mark.slow  # one tiny epoch on each engine: Keras fit and timm's loop
@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the benchmark script's mechanics: run once, on torch")
def test_recipe_equivalence_benchmark_smoke_run(tmp_path):
    benchmark = _recipe_benchmark()
    results, table = benchmark.main(["--smoke", "--recipes", "c", "--output", str(tmp_path)])
    for engine in ("timm", "keras-sequencer"):
        curve = results[engine]["c"]["0"]
        assert len(curve) == 1 and 0.0 <= curve[0] <= 1.0
    assert "(c) + MixUp 0.8 / CutMix 1.0" in table and "(a)" not in table
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "results.json").exists()
    # The ablation: each engine trains on the other's batches (timm's loop on the tf.data
    # pipeline's, keras-sequencer's model on timm's loader's) and still validates.
    swapped = benchmark.main(["--smoke", "--recipes", "b", "--swap-batches", "--output", str(tmp_path / "swap")])[0]
    for engine in ("timm", "keras-sequencer"):
        curve = swapped[engine]["b"]["0"]
        assert len(curve) == 1 and 0.0 <= curve[0] <= 1.0


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the benchmark script's mechanics: run once, on torch")
def test_swapped_batches_are_what_each_loss_expects(tmp_path):
    """``--swap-batches``: keras-sequencer's batches reach timm's loop as NCHW float32
    tensors with label-smoothed soft targets (what ``SoftTargetCrossEntropy`` takes);
    timm's MixUp/CutMix batches carry soft targets that sum to 1."""
    benchmark = _recipe_benchmark()
    args = benchmark.parse_args(["--smoke"])
    folder = benchmark.write_digits_folder(str(tmp_path / "digits"), train_limit=64, val_limit=10)
    batches, steps = benchmark.keras_batches(folder, benchmark.RECIPES["c"], 0, args)
    assert steps == 64 // benchmark.SETTINGS["batch_size"]
    images, targets = next(batches)
    assert tuple(images.shape) == (32, 3, 32, 32) and str(images.dtype) == "torch.float32"
    np.testing.assert_allclose(targets.sum(-1).numpy(), 1.0, atol=1e-6)
    assert float(targets.min()) >= 0.01 - 1e-7  # smoothing 0.1 over 10 classes
    assert float(images.std()) > 0.5  # normalised pixels, not 0-1 or 0-255
    train_loader, _, mix = benchmark.timm_data(folder, benchmark.RECIPES["c"], 0, args)
    images, labels = mix(*next(iter(train_loader)))
    assert tuple(images.shape) == (32, 3, 32, 32) and labels.shape == targets.shape
    np.testing.assert_allclose(labels.sum(-1).numpy(), 1.0, atol=1e-6)


def test_recipe_equivalence_reports_runs_made_side_by_side(tmp_path):
    """``--load`` merges the results.json of one run per engine and reports the
    best and the last epoch, mean +- std over the seeds, keras-sequencer minus timm."""
    import json

    benchmark = _recipe_benchmark()
    runs = {
        "timm": {
            "a": {"0": [0.1, 0.5, 0.4], "1": [0.2, 0.3, 0.6]},
            "b": {"0": [0.5], "1": [0.6]},
            "c": {"0": [0.27], "1": [0.33]},
        },
        "keras-sequencer": {
            "a": {"0": [0.3, 0.7, 0.7], "1": [0.2, 0.5, 0.5]},
            "b": {"0": [0.52], "1": [0.6]},
            # float32 values, as Keras's history stores them: 29.0 % in all
            "c": {"0": [float(np.float32(0.29))], "1": [float(np.float32(0.29))]},
        },
    }
    paths = []
    for engine, results in runs.items():
        paths.append(str(tmp_path / f"{engine}.json"))
        with open(paths[-1], "w") as f:
            json.dump({"args": {}, "results": {engine: results}}, f)
    merged, text = benchmark.main(["--load", *paths, "--output", str(tmp_path / "report")])
    assert merged == runs
    best, last = text.split("at the last epoch")
    # (a) best: timm 50, 60 -> 55.0 +- 5.0; keras 70, 50 -> 60.0 +- 10.0; pooled sqrt(62.5);
    # standard error sqrt(50 / 2 + 200 / 2)
    assert "| 55.0 ± 5.0 % (n=2) | 60.0 ± 10.0 % (n=2) | +5.0 | 7.9 | 11.2 | not met |" in best
    # (b) best: 55.0 +- 5.0 against 56.0 +- 4.0: 1 point, on the 1-point target
    assert "| 55.0 ± 5.0 % (n=2) | 56.0 ± 4.0 % (n=2) | +1.0 | 4.5 | 6.4 | met |" in best
    # (c) best: 30.0 against 29.0 (float32 0.29 is 28.9999992 %): 1 point, on the bound,
    # so met; pooled sqrt((9 + 0) / 2), standard error sqrt(18 / 2 + 0)
    assert "| 30.0 ± 3.0 % (n=2) | 29.0 ± 0.0 % (n=2) | -1.0 | 2.1 | 3.0 | met |" in best
    # (a) last: timm 40, 60 -> 50.0; keras 70, 50 -> 60.0 (no target columns)
    assert "| 50.0 ± 10.0 % (n=2) | 60.0 ± 10.0 % (n=2) | +10.0 |\n" in last
    assert (tmp_path / "report" / "curves.png").stat().st_size > 0
    only_c = benchmark.main(["--load", *paths, "--recipes", "c", "--output", str(tmp_path / "c")])[1]
    assert "(c)" in only_c and "(a)" not in only_c


def test_results_md_recipe_tables_are_computed_from_the_committed_runs():
    """The recipe tables in benchmarks/RESULTS.md are what the benchmark's report computes
    from the raw runs kept in benchmarks/recipe_runs/<architecture>[-<variant>]/ (one
    results.json per engine and batch of seeds, each naming the machine, versions and
    commit it ran on; one table per folder)."""
    import glob
    import json
    import os

    benchmark = _recipe_benchmark()
    root = os.path.join(REPO, "benchmarks")
    folders = sorted(glob.glob(os.path.join(root, "recipe_runs", "*", "")))
    assert folders, "benchmarks/recipe_runs/<architecture>/ holds the runs behind RESULTS.md"
    with open(os.path.join(root, "RESULTS.md")) as f:
        text = f.read()
    for folder in folders:
        paths, swapped = sorted(glob.glob(os.path.join(folder, "*.json"))), set()
        for path in paths:
            with open(path) as f:
                run = json.load(f)
            assert run["machine"]["cpu"] and run["commit"] and run["versions"]["keras"], path
            architecture = run["args"]["arch"] or run["args"]["model"]
            assert os.path.basename(os.path.dirname(path)).split("-")[0] == architecture, path
            swapped.add(bool(run["args"].get("swap_batches")))
        assert len(swapped) == 1, folder  # one table, one setting: all runs swapped batches or none
        results = benchmark.load_results(paths)
        engines = ["timm", "keras-sequencer"]
        tables = (
            benchmark.summary_table(results, engines, target=True),
            benchmark.summary_table(results, engines, lambda curve: curve[-1]),
        )
        rows = [row for table in tables for row in table.splitlines()[2:]]
        recipes = {key for engine in engines for key in results.get(engine, {})}
        assert recipes and len(rows) == 2 * len(recipes), folder  # best and last epoch of each recipe
        for row in rows:
            assert row in text, (folder, row)


def test_the_keras_eps_ablation_gives_timms_adamw_kerass_steps():
    """``--timm-adam-eps keras``: torch's AdamW with :func:`keras_effective_eps`
    before each update moves a weight as Keras's Adam does; with torch's own
    eps it moves differently where the gradient is as small as eps."""
    import torch

    benchmark = _recipe_benchmark()
    gradients = np.array([[1e-8, 3e-6, 0.1], [2e-8, -1e-6, 0.2], [-1e-8, 2e-6, -0.1]], "float32")

    def torch_path(ablation):
        weight = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.AdamW([weight], lr=1e-3, eps=1e-8, weight_decay=0.0)
        for update, gradient in enumerate(gradients, 1):
            weight.grad = torch.tensor(gradient)
            if ablation:
                benchmark.keras_effective_eps(optimizer, update)
            optimizer.step()
        return weight.detach().numpy()

    weight = keras.Variable(np.ones(3, "float32"))
    optimizer = keras.optimizers.Adam(learning_rate=1e-3, epsilon=1e-8)
    for gradient in gradients:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(gradient), weight)])
    keras_weight = keras.ops.convert_to_numpy(weight.value)
    np.testing.assert_allclose(torch_path(ablation=True) - 1, keras_weight - 1, rtol=1e-4, atol=1e-9)
    assert np.abs((torch_path(ablation=False) - 1)[:2] - (keras_weight - 1)[:2]).max() > 1e-5
