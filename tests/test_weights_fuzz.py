"""Checkpoint readers fed truncated and randomly mutated files.

A tiny model's real ``.safetensors``, ``.pth`` (torch.save's zip format),
``.weights.h5`` and ``.keras`` files are damaged (truncated, bytes flipped,
spans overwritten, bytes inserted or deleted; fixed seed) and read through the
package's entry points: the builders' ``weights=`` path
(:func:`keras_sequencer.weights.load_weights`), :func:`conversion.read_checkpoint`
and :func:`keras_sequencer.weights.load_model`. Each case must either raise a
``ValueError``/``OSError`` whose message names the file, or load exactly what
the file holds as read by the file format's own library (safetensors, torch,
h5py): a damaged tensor payload can be a valid file with other numbers.

The cases run in a child process (``python tests/test_weights_fuzz.py``) under
a time limit, so a crash of the interpreter or a hang fails the test and names
the case it happened in.
"""

import io
import json
import os
import random
import subprocess
import sys
import tempfile
import zipfile

import pytest

from tests.helpers import run_in_one_backend_pass, tiny_arch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
FORMATS = ("safetensors", "pth", "weights.h5", "keras")
# The smallest architecture with every kind of layer (stem, downsample, block, head).
ARCH = tiny_arch(2, width=8, hidden=2, mlp_ratio=2.0)


# ------------------------------------------------------------------ mutations --
def mutate(data, rng):
    """One random damage of ``data`` (bytes): ``(description, damaged bytes)``."""
    n = len(data)

    def position():
        # Headers and zip directories sit at the ends: damage them more often.
        region = rng.random()
        if region < 0.35:
            return rng.randrange(min(n, 512))
        if region < 0.6:
            return n - 1 - rng.randrange(min(n, 512))
        return rng.randrange(n)

    kind = rng.choice(("truncate", "flip", "flip", "overwrite", "insert", "delete"))
    if kind == "truncate":
        cut = rng.choice((0, 1, 8, 16, rng.randrange(n), rng.randrange(n), n - 1))
        return f"truncate to {cut}", data[:cut]
    out = bytearray(data)
    if kind == "flip":
        count = rng.choice((1, 1, 2, 4, 16))
        spots = [position() for _ in range(count)]
        for spot in spots:
            out[spot] ^= 1 << rng.randrange(8)
        return f"flip bits at {spots}", bytes(out)
    start = position()
    length = rng.choice((1, 4, 8, 64))
    junk = bytes(rng.randrange(256) for _ in range(length))
    if kind == "overwrite":
        out[start : start + length] = junk[: max(0, n - start)]
        return f"overwrite {length} bytes at {start}", bytes(out[:n])
    if kind == "insert":
        return f"insert {length} bytes at {start}", bytes(out[:start] + junk + out[start:])
    return f"delete {length} bytes at {start}", bytes(out[:start] + out[start + length :])


# -------------------------------------------------------------- child process --
def _h5_values(source):
    """``{dataset path: float32 array}`` of an h5 file (path or file object), read by h5py."""
    import h5py
    import numpy as np

    found = {}
    with h5py.File(source, "r") as f:
        f.visititems(
            lambda name, obj: (
                found.__setitem__(name, np.asarray(obj[()], "float32")) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return found


def _same(a, b):
    import numpy as np

    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and np.array_equal(a[k], b[k], equal_nan=True) for k in a
    )


class Fuzzer:
    """Writes the tiny model's files under ``folder`` and checks damaged copies."""

    def __init__(self, folder):
        import keras
        import numpy as np
        import torch
        from safetensors.numpy import save_file

        from keras_sequencer import Sequencer2D, conversion, weights

        self.np, self.conversion, self.weights = np, conversion, weights
        self.folder = folder
        keras.utils.set_random_seed(0)
        self.model = Sequencer2D(**ARCH, classes=3, classifier_activation=None, name="tiny")
        self.reference = Sequencer2D(**ARCH, classes=3, classifier_activation=None, name="tiny")
        # A timm-layout state dict (random tensors) written in each format.
        state = self._timm_state(np.random.RandomState(0))
        self.originals = {}
        path = os.path.join(folder, "tiny.safetensors")
        save_file(state, path)
        self.originals["safetensors"] = path
        path = os.path.join(folder, "tiny.pth")
        torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
        self.originals["pth"] = path
        conversion.load_state_dict(self.model, state)
        path = os.path.join(folder, "tiny.weights.h5")
        self.model.save_weights(path)
        self.originals["weights.h5"] = path
        path = os.path.join(folder, "tiny.keras")
        self.model.save(path)
        self.originals["keras"] = path

    def _timm_state(self, rng):
        """Random tensors under every timm key the tiny model needs, shaped as timm's."""
        torch_shapes = {}
        for variable, keys, _ in self.conversion.weight_map(self.model):
            shape = tuple(variable.shape)
            if len(keys) == 2 and len(shape) == 1:  # LSTM bias b_ih + b_hh
                torch_shapes.update({k: shape for k in keys})
            elif len(keys) == 2:  # GRU bias (not in this model)
                torch_shapes.update({k: shape[1:] for k in keys})
            elif len(shape) == 4:  # conv (kh, kw, in, out) -> (out, in, kh, kw)
                torch_shapes[keys[0]] = (shape[3], shape[2], shape[0], shape[1])
            elif len(shape) == 2 and not keys[0].endswith("pos_embed"):
                torch_shapes[keys[0]] = shape[::-1]
            else:
                torch_shapes[keys[0]] = shape
        return {k: rng.standard_normal(s).astype("float32") for k, s in sorted(torch_shapes.items())}

    def _weights(self, model):
        return [self.np.asarray(w) for w in model.get_weights()]

    def _equal_weights(self, a, b):
        np = self.np
        return len(a) == len(b) and all(
            x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b)
        )

    def check(self, fmt, path):
        """``("raised" | "loaded", None)`` when reading ``path`` behaves, else
        ``(outcome, what went wrong)``."""
        try:
            loaded = self._load(fmt, path)
        except (ValueError, OSError) as error:
            if path not in str(error):
                return "raised", f"{type(error).__name__} without the path: {str(error)[:300]}"
            return "raised", None
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - the point of the test
            return "raised", f"{type(error).__name__} (not ValueError/OSError): {str(error)[:300]}"
        try:
            expected = self._expected(fmt, path, loaded)
        except Exception as error:  # noqa: BLE001
            return "loaded", f"the format's own reader fails: {type(error).__name__}: {error}"
        return "loaded", None if expected else "loaded values differ from the file's contents"

    def _load(self, fmt, path):
        if fmt == "keras":
            return self.weights.load_model(path)
        if fmt != "weights.h5":
            state = self.conversion.read_checkpoint(path)
            self.weights.load_weights(self.model, path)
            return state
        self.weights.load_weights(self.model, path)
        return None

    def _expected(self, fmt, path, loaded):
        """True when what was loaded equals the file's contents read independently."""
        if fmt in ("safetensors", "pth"):
            if fmt == "safetensors":
                from safetensors.numpy import load_file

                raw = load_file(path)
            else:
                import torch

                raw = torch.load(path, map_location="cpu", weights_only=True)
            raw = {
                k: self.np.asarray(v.float().numpy() if hasattr(v, "detach") else v, "float32") for k, v in raw.items()
            }
            if not _same(raw, loaded):
                return False
            self.conversion.load_state_dict(self.reference, raw)
            return self._equal_weights(self._weights(self.reference), self._weights(self.model))
        saved = os.path.join(self.folder, "loaded.weights.h5")
        if fmt == "weights.h5":
            self.model.save_weights(saved)
            return _same(_h5_values(path), _h5_values(saved))
        loaded.save_weights(saved)
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as stored:
            return _same(_h5_values(io.BytesIO(stored.read())), _h5_values(saved))


def child(folder, seed, cases_per_format, log_path):
    """Runs the cases; one JSON line per case to ``log_path`` (``start`` before it)."""
    fuzzer = Fuzzer(folder)
    rng = random.Random(seed)
    with open(log_path, "a") as log:
        for fmt in FORMATS:
            original = open(fuzzer.originals[fmt], "rb").read()
            for index in range(cases_per_format):
                what, data = mutate(original, rng)
                path = os.path.join(folder, f"case{index}.{fmt}")
                with open(path, "wb") as f:
                    f.write(data)
                log.write(json.dumps({"start": f"{fmt}: {what}"}) + "\n")
                log.flush()
                outcome, problem = fuzzer.check(fmt, path)
                record = {"case": f"{fmt}: {what}", "format": fmt, "outcome": outcome, "problem": problem}
                log.write(json.dumps(record) + "\n")
                log.flush()
                os.remove(path)


# ----------------------------------------------------------------------- tests --
def run_cases(tmp_path, seed, cases_per_format, timeout):
    log_path = tmp_path / "cases.jsonl"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        result = subprocess.run(
            [sys.executable, __file__, str(tmp_path), str(seed), str(cases_per_format), str(log_path)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        ended = f"exit status {result.returncode}: {result.stderr[-2000:]}"
        returncode = result.returncode
    except subprocess.TimeoutExpired:
        ended, returncode = f"no end within {timeout} s (hang?)", None
    records = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    done = [r for r in records if "case" in r]
    problems = [f"{r['case']}: {r['problem']}" for r in done if r["problem"]]
    assert not problems, f"{len(problems)} of {len(done)} cases misbehave:\n" + "\n".join(problems)
    if returncode != 0:
        last = records[-1].get("start") if records and "start" in records[-1] else None
        pytest.fail(f"fuzzing child process: {ended}; during case: {last}")
    assert len(done) == cases_per_format * len(FORMATS)
    for fmt in FORMATS:  # the damage reaches both the error paths and the loaded values
        outcomes = {r["outcome"] for r in done if r["format"] == fmt}
        assert outcomes == {"raised", "loaded"}, (fmt, outcomes)
    return done


@pytest.mark.slow
def test_damaged_checkpoints_raise_naming_the_file_or_load_what_they_hold(tmp_path):
    run_cases(tmp_path, seed=20, cases_per_format=40, timeout=600)


@pytest.mark.slow
def test_damaged_checkpoints_many_more_cases(tmp_path):
    # the file readers are backend-independent; every pass runs the 40 cases above
    run_in_one_backend_pass("damaged checkpoints, many more cases")
    run_cases(tmp_path, seed=2020, cases_per_format=250, timeout=3000)


def test_the_check_flags_values_other_than_the_files(tmp_path):
    """The fuzz check is not vacuous: an intact file loads; a model whose weights
    then differ from the file, or a wrongly typed error, is reported."""
    fuzzer = Fuzzer(str(tmp_path))
    for fmt in FORMATS:
        assert fuzzer.check(fmt, fuzzer.originals[fmt]) == ("loaded", None), fmt
    shifted = [w + 1.0 for w in fuzzer.model.get_weights()]
    for fmt in ("safetensors", "pth", "weights.h5"):
        state = fuzzer._load(fmt, fuzzer.originals[fmt])
        fuzzer.model.set_weights(shifted)
        assert not fuzzer._expected(fmt, fuzzer.originals[fmt], state), fmt
    loaded = fuzzer._load("keras", fuzzer.originals["keras"])
    loaded.set_weights(shifted)
    assert not fuzzer._expected("keras", fuzzer.originals["keras"], loaded)
    fuzzer._load = lambda fmt, path: {}["missing"]
    assert fuzzer.check("pth", fuzzer.originals["pth"])[1].startswith("KeyError")


def test_mutate_is_deterministic_and_damages():
    data = bytes(range(256)) * 8
    rng_a, rng_b = random.Random(3), random.Random(3)
    a = [mutate(data, rng_a) for _ in range(50)]
    assert a == [mutate(data, rng_b) for _ in range(50)]
    assert sum(damaged != data for _, damaged in a) >= 45


if __name__ == "__main__":
    folder, seed, cases, log_file = sys.argv[1:5]
    with tempfile.TemporaryDirectory(dir=folder) as work:
        child(work, int(seed), int(cases), log_file)
