"""The one variant table (keras_sequencer.variants) and the lookups that read it."""

import dataclasses
import inspect
import re

import numpy as np
import pytest

import keras_sequencer
from keras_sequencer import models, pretrained, registry, variants
from tests.helpers import (
    TINY_ARCH,
    quick_first,
    random_images,
    requires_timm,
    run_model,
    state_dict_numpy,
    timm_model,
)

NAMES = sorted(variants.VARIANTS)
# Models small enough to build and run by default (the CIFAR-scale ones).
SMALL = [n for n in NAMES if variants.VARIANTS[n].input_size <= 32]


def total_stride(variant):
    return int(np.prod(variant.arch["patch_sizes"]))


def test_table_rows():
    assert len(NAMES) == 21
    assert NAMES == variants.list_models() == keras_sequencer.list_models()
    assert SMALL == ["sequencer2d_cifar_medium", "sequencer2d_cifar_small", "vanilla_bilstm_cifar"]
    for name, v in variants.VARIANTS.items():
        assert v.name == name
        assert v.family in variants.FAMILIES
        assert (
            not set(v.arch)
            - set(variants.ARCH_DEFAULTS[v.family])
            - {"layers", "patch_sizes", "embed_dims", "hidden_sizes"}
        ), name
        assert len({len(v.arch[k]) for k in ("layers", "patch_sizes", "embed_dims", "hidden_sizes")}) == 1
        assert v.input_size % total_stride(v) == 0, name
        assert v.full_arch == {**variants.ARCH_DEFAULTS[v.family], **v.arch}
    assert variants.get_variant("v_sequencer_s").family == "vanilla"
    assert variants.get_variant("sequencer2d_cifar_small").defaults == {"classes": 10, "dropout_rate": 0.1}


def test_rows_are_read_only():
    v = variants.get_variant("sequencer2d_s")
    with pytest.raises(TypeError):
        v.arch["layers"] = (1, 1, 1, 1)
    with pytest.raises(TypeError):
        v.defaults["classes"] = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.input_size = 32
    with pytest.raises(ValueError, match="family"):
        variants.Variant("x", "transformer", TINY_ARCH)


def test_arch_defaults_are_the_builders_defaults():
    """variants.py imports no builder; its ARCH_DEFAULTS must say what the builders do."""
    params = inspect.signature(models.Sequencer2D).parameters
    for key, value in variants.ARCH_DEFAULTS["sequencer2d"].items():
        assert params[key].default == value, key
    vanilla = inspect.signature(models.VanillaSequencer).parameters
    for key, value in variants.ARCH_DEFAULTS["vanilla"].items():
        default = vanilla[key].default if key in vanilla else params[key].default
        if key == "token_mixer":
            default = "1d"  # VanillaSequencer passes it
        assert default == value, key


def test_published_weights():
    published = [n for n in NAMES if variants.VARIANTS[n].weights is not None]
    assert published == variants.list_models(pretrained=True) == ["sequencer2d_l", "sequencer2d_m", "sequencer2d_s"]
    for name in published:
        w = variants.VARIANTS[name].weights
        assert w.repo == f"timm/{name}.in1k"
        assert re.fullmatch(r"[0-9a-f]{40}", w.commit)
        assert w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256)
        assert w.original_url == (f"https://github.com/okojoalg/sequencer/releases/download/weights/{name}.pth")
        assert 80 < w.top1 < w.top5 < 100
    top1 = [variants.VARIANTS[n].weights.top1 for n in ("sequencer2d_s", "sequencer2d_m", "sequencer2d_l")]
    assert top1 == sorted(top1)


def test_variant_for_arch():
    for name in variants.list_models(pretrained=True):
        arch = {k: list(v) if isinstance(v, tuple) else v for k, v in variants.VARIANTS[name].arch.items()}
        assert variants.variant_for_arch(arch) == name  # defaults filled in, lists == tuples
        assert variants.variant_for_arch(variants.VARIANTS[name].full_arch) == name
        assert pretrained.variant_for_arch(arch) == name
    # the _392 twins share S/M/L's architecture: their weights are S/M/L's
    assert variants.variant_for_arch(variants.VARIANTS["sequencer2d_s_392"].arch) == "sequencer2d_s"
    for name in ("gru_sequencer2d_s", "v_sequencer_s", "sequencer2d_cifar_small"):
        with pytest.raises(ValueError, match="exists only for the published architectures"):
            variants.variant_for_arch(variants.VARIANTS[name].full_arch)


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ValueError) as info:
        variants.get_variant("sequencer2d_ss")
    message = str(info.value)
    assert message.startswith("Unknown model 'sequencer2d_ss'. Did you mean sequencer2d_s")
    assert "\n" not in message
    assert message.endswith(f"Registered: {', '.join(NAMES)}.")
    with pytest.raises(ValueError, match="Did you mean vanilla_bilstm_cifar"):
        variants.get_variant("vanila_bilstm_cifar")
    with pytest.raises(ValueError) as info:
        variants.get_variant("resnet50")
    assert "Did you mean" not in str(info.value) and "Registered: gru_sequencer2d_s" in str(info.value)
    for bad in (None, 3, ["sequencer2d_s"]):
        with pytest.raises(ValueError, match="Unknown model"):
            variants.get_variant(bad)


def test_derived_views_equal_the_table():
    table = variants.VARIANTS
    assert dict(models.MODEL_CONFIGS) == {n: dict(v.arch) for n, v in table.items() if v.weights is not None}
    assert keras_sequencer.MODEL_CONFIGS is models.MODEL_CONFIGS
    assert dict(pretrained.PRETRAINED) == {
        n: dataclasses.asdict(v.weights) for n, v in table.items() if v.weights is not None
    }
    assert keras_sequencer.MODEL_REGISTRY is registry.MODEL_REGISTRY
    assert sorted(registry.MODEL_REGISTRY) == NAMES
    for name, spec in registry.MODEL_REGISTRY.items():
        v = table[name]
        assert spec.builder is registry.BUILDERS[v.family]
        assert (spec.arch, spec.input_size, spec.fixed_input_size, spec.defaults, spec.pretrained) == (
            dict(v.arch),
            v.input_size,
            v.fixed_input_size,
            dict(v.defaults),
            v.weights is not None,
        )
        assert registry.get_spec(name) == spec
    assert registry.BUILDERS == {
        "sequencer2d": keras_sequencer.Sequencer2D,
        "vanilla": keras_sequencer.VanillaSequencer,
    }


def test_views_follow_the_table_and_refuse_writes(monkeypatch):
    tiny = variants.Variant(
        "sequencer2d_tiny",
        "sequencer2d",
        TINY_ARCH,
        weights=variants.PublishedWeights(repo="test/tiny", commit="0" * 40),
    )
    monkeypatch.setitem(variants.VARIANTS, tiny.name, tiny)
    assert models.MODEL_CONFIGS["sequencer2d_tiny"] == TINY_ARCH
    assert registry.MODEL_REGISTRY["sequencer2d_tiny"].arch == TINY_ARCH
    assert pretrained.PRETRAINED["sequencer2d_tiny"]["repo"] == "test/tiny"
    assert "sequencer2d_tiny" in variants.list_models(pretrained=True)
    for view in (models.MODEL_CONFIGS, registry.MODEL_REGISTRY, pretrained.PRETRAINED):
        with pytest.raises(TypeError, match="read-only view of keras_sequencer.variants.VARIANTS"):
            view["sequencer2d_s"] = {}
        with pytest.raises(TypeError, match="read-only view"):
            del view["sequencer2d_s"]
    # a lookup's result is a copy: editing it leaves the table alone
    models.MODEL_CONFIGS["sequencer2d_s"]["layers"] = (1, 1, 1, 1)
    assert models.MODEL_CONFIGS["sequencer2d_s"]["layers"] == (4, 3, 8, 3)


class _Recorder:
    """Stands in for the builders: records each call and returns a tiny model
    with the asked-for head (one per head, reused: building is the slow part)."""

    def __init__(self):
        self.calls = []
        self.models = {}

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        keys = ("include_top", "classes", "classifier_activation")
        head = tuple(sorted((k, kwargs[k]) for k in keys if k in kwargs))
        if head not in self.models:
            self.models[head] = models.Sequencer2D(**TINY_ARCH, **dict(head))
        return self.models[head]


@pytest.fixture
def recorder(monkeypatch):
    """Every builder replaced by one _Recorder."""
    record = _Recorder()
    for family in variants.FAMILIES:
        monkeypatch.setitem(registry.BUILDERS, family, record)
    return record


def _expected_call(name, **kwargs):
    v = variants.get_variant(name)
    call = {**v.arch, "weights": None, **v.defaults, "name": name, **kwargs}
    if v.fixed_input_size:
        call.setdefault("input_shape", (v.input_size, v.input_size, 3))
    return call


def test_create_model_passes_the_row_to_its_builder(recorder):
    for name in NAMES:
        keras_sequencer.create_model(name, drop_path_rate=0.1)
    assert recorder.calls == [_expected_call(name, drop_path_rate=0.1) for name in NAMES]


def test_feature_extractor_looks_names_up_in_the_table(recorder):
    for name in NAMES:
        extractor = keras_sequencer.feature_extractor(name, out_indices=(0,), input_shape=(28, 28, 3))
        assert extractor.output_shape[-1] == TINY_ARCH["embed_dims"][0]
    assert recorder.calls == [_expected_call(name, include_top=False, input_shape=(28, 28, 3)) for name in NAMES]


@pytest.mark.slow
@requires_timm
def test_convert_checkpoint_looks_names_up_in_the_table(recorder, tmp_path):
    from safetensors.numpy import save_file

    checkpoint = tmp_path / "tiny.safetensors"
    save_file(state_dict_numpy(timm_model(TINY_ARCH, num_classes=7)), str(checkpoint))
    for name in NAMES:
        output = tmp_path / f"{name}.weights.h5"
        model = registry.convert_checkpoint(checkpoint, output, model_name=name)
        assert model.output_shape == (None, 7) and output.exists()
    options = dict(include_top=True, classes=7, classifier_activation=None)
    assert recorder.calls == [_expected_call(name, **options) for name in NAMES]


def test_every_lookup_rejects_unknown_names_alike(tmp_path):
    with pytest.raises(ValueError) as info:
        variants.get_variant("sequencer2d_xs")
    expected = str(info.value)
    lookups = [
        lambda: keras_sequencer.create_model("sequencer2d_xs"),
        lambda: keras_sequencer.feature_extractor("sequencer2d_xs"),
        lambda: registry.get_spec("sequencer2d_xs"),
        # the name is checked before the checkpoint is read
        lambda: registry.convert_checkpoint(
            tmp_path / "missing.safetensors", tmp_path / "o.weights.h5", model_name="sequencer2d_xs"
        ),
    ]
    for lookup in lookups:
        with pytest.raises(ValueError) as info:
            lookup()
        assert str(info.value) == expected


@pytest.mark.parametrize("name", quick_first(SMALL))
def test_small_variants_build_and_run(name):
    v = variants.get_variant(name)
    model = keras_sequencer.create_model(name)
    assert model.name == name and model.input_shape == (None, None, None, 3)
    size = v.input_size
    probs = run_model(model, random_images(2, size, size))
    assert probs.shape == (2, v.defaults["classes"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    extractor = keras_sequencer.feature_extractor(name, input_shape=(size, size, 3))
    assert len(extractor.outputs) == 3  # timm's default indices exist for every row
