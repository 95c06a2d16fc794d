"""The model family by name: registry, official configs, parameter counts, and
forward / train / save for every registered model."""

import contextlib

import keras
import numpy as np
import pytest

import keras_sequencer
from keras_sequencer import registry, variants
from tests.helpers import (
    quick_first,
    random_images,
    requires_timm,
    run_in_the_pass_of,
    run_model,
    save_and_reload,
    tiny_arch,
    to_numpy,
)

REQUIRED = [
    *(f"sequencer2d_{s}" for s in "sml"),
    *(f"sequencer2d_{s}_392" for s in "sml"),
    "sequencer2d_s_unidirectional",
    "sequencer2d_s_add",
    "sequencer2d_s_h2x",
    "sequencer2d_s_without_fc",
    "sequencer2d_vertical",
    "sequencer2d_s_horizontal",
    "gru_sequencer2d_s",
    "rnn_sequencer2d_s",
    "sequencer2d_l_d4_3x",
    "v_sequencer_s",
    "v_sequencer_s_h",
    "v_sequencer_s_pe",
    "sequencer2d_cifar_small",
    "sequencer2d_cifar_medium",
    "vanilla_bilstm_cifar",
]

# Parameter counts of the PyTorch definitions (official okojoalg/sequencer registrations,
# built with timm's Sequencer2d + the RNN2d/1-D references below; 1000 classes, CIFAR
# ones 10). Checked against torch in test_official_parameter_counts.
OFFICIAL_PARAMS = {
    "gru_sequencer2d_s": 24_874_600,
    "rnn_sequencer2d_s": 19_320_424,
    "sequencer2d_cifar_medium": 3_277_930,
    "sequencer2d_cifar_small": 1_903_978,
    "sequencer2d_l": 54_298_216,
    "sequencer2d_l_392": 54_298_216,
    "sequencer2d_l_d4_3x": 96_252_392,
    "sequencer2d_m": 38_307_688,
    "sequencer2d_m_392": 38_307_688,
    "sequencer2d_s": 27_651_688,
    "sequencer2d_s_392": 27_651_688,
    "sequencer2d_s_add": 26_545_768,
    "sequencer2d_s_h2x": 45_395_560,
    "sequencer2d_s_horizontal": 27_645_544,
    "sequencer2d_s_unidirectional": 20_991_592,
    "sequencer2d_s_without_fc": 25_433_704,
    "sequencer2d_vertical": 27_645_544,
    "v_sequencer_s": 33_016_552,
    "v_sequencer_s_h": 27_645_544,
    "v_sequencer_s_pe": 33_114_856,
    "vanilla_bilstm_cifar": 1_903_018,
}


def torch_only_biases(arch):
    """Parameters torch has and Keras does not: torch keeps two RNN bias vectors
    (b_ih, b_hh) per direction; Keras LSTM and SimpleRNN keep one (their sum), Keras
    GRU (reset_after=True) keeps both, so 4h (LSTM), h (RNN) or 0 (GRU) per direction."""
    per_direction = {"lstm": 4, "gru": 0, "rnn": 1}[arch.get("rnn_type", "lstm")]
    directions = 2 if arch.get("bidirectional", True) else 1
    if arch.get("token_mixer", "2d") == "1d" or arch.get("position_embedding"):
        rnns = 1
    else:
        rnns = 2 if arch.get("union", "cat") in ("cat", "add") else 1
    return sum(n * rnns * directions * per_direction * h for n, h in zip(arch["layers"], arch["hidden_sizes"]))


def official_arch(name):
    spec = registry.MODEL_REGISTRY[name]
    arch = dict(spec.arch)
    if spec.builder is keras_sequencer.VanillaSequencer:
        arch["token_mixer"] = "1d"
    return arch


def test_registry_names():
    names = keras_sequencer.list_models()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)
    assert set(names) == set(OFFICIAL_PARAMS)
    assert keras_sequencer.list_models(pretrained=True) == ["sequencer2d_l", "sequencer2d_m", "sequencer2d_s"]


def test_official_configs():
    """Spot checks against okojoalg/sequencer models/two_dim_sequencer.py and
    models/vanilla_sequencer.py."""
    arch = {name: official_arch(name) for name in OFFICIAL_PARAMS}
    for s in "sml":
        assert arch[f"sequencer2d_{s}_392"] == keras_sequencer.MODEL_CONFIGS[f"sequencer2d_{s}"]
        assert registry.MODEL_REGISTRY[f"sequencer2d_{s}_392"].input_size == 392
    assert arch["sequencer2d_s_h2x"]["hidden_sizes"] == (96, 192, 192, 192)
    for name, union in (("sequencer2d_vertical", "vertical"), ("sequencer2d_s_horizontal", "horizontal")):
        assert arch[name]["hidden_sizes"] == (96, 192, 192, 192)
        assert (arch[name]["union"], arch[name]["with_fc"]) == (union, False)
    assert arch["sequencer2d_l_d4_3x"]["layers"] == (8, 8, 16, 4)
    assert arch["sequencer2d_l_d4_3x"]["embed_dims"] == (256, 512, 512, 512)
    assert arch["sequencer2d_l_d4_3x"]["hidden_sizes"] == (64, 128, 128, 128)
    assert arch["v_sequencer_s"]["patch_sizes"] == (14, 1, 1, 1)
    assert arch["v_sequencer_s"]["embed_dims"] == (384,) * 4
    assert arch["v_sequencer_s_h"]["patch_sizes"] == (7, 2, 1, 1)
    assert arch["v_sequencer_s_h"]["hidden_sizes"] == (96, 192, 192, 192)
    assert arch["v_sequencer_s_pe"]["position_embedding"] is True


def test_create_model_errors():
    with pytest.raises(ValueError, match="sequencer2d_s"):
        keras_sequencer.create_model("sequencer2d_ss")
    with pytest.raises(ValueError, match="hidden_sizes is part of the registered architecture"):
        keras_sequencer.create_model("sequencer2d_cifar_small", hidden_sizes=(8, 8, 8))
    with pytest.raises(ValueError, match="no published ImageNet weights"):
        keras_sequencer.create_model("sequencer2d_s_392", weights="imagenet")
    with pytest.raises(ValueError, match="fixed input_shape"):
        keras_sequencer.create_model("v_sequencer_s_pe", input_shape=(None, None, 3))


def test_cifar_defaults():
    small = keras_sequencer.create_model("sequencer2d_cifar_small")
    assert small.input_shape == (None, None, None, 3) and small.output_shape == (None, 10)
    layer_names = [layer.name for layer in small.layers]
    # stem -> LayerNorm -> 4 blocks -> patch merging -> 3 blocks -> pointwise linear -> pool
    assert layer_names[layer_names.index("stem") :] == [
        "stem",
        "stem_norm",
        *(f"stages_0_blocks_{j}" for j in range(4)),
        "stages_1_downsample",
        *(f"stages_1_blocks_{j}" for j in range(3)),
        "stages_2_downsample",
        "norm",
        "avg_pool",
        "head_dropout",
        "head",
    ]
    assert small.get_layer("stages_2_downsample").patch_size == 1


# ----------------------------------------------------------- torch references --
def _torch_references():
    """GRU2d / RNN2d (as the official GRU2D / RNN2D) and the VanillaSequencer's 1-D
    LSTM, written against timm's RNN2dBase / Sequencer2d; plus the absolute
    position embedding of v_sequencer_s_pe."""
    import torch
    from timm.models.sequencer import LSTM2d, RNN2dBase, Sequencer2d
    from torch import nn

    def rnn2d(rnn_class):
        class Rnn2d(RNN2dBase):
            def __init__(
                self,
                input_size,
                hidden_size,
                num_layers=1,
                bias=True,
                bidirectional=True,
                union="cat",
                with_fc=True,
                **kwargs,
            ):
                super().__init__(input_size, hidden_size, num_layers, bias, bidirectional, union, with_fc)
                make = lambda: rnn_class(  # noqa: E731
                    input_size,
                    hidden_size,
                    num_layers,
                    batch_first=True,
                    bias=bias,
                    bidirectional=bidirectional,
                )
                if self.with_vertical:
                    self.rnn_v = make()
                if self.with_horizontal:
                    self.rnn_h = make()

        return Rnn2d

    class LSTM1d(nn.Module):
        """okojoalg models/layers.py LSTM: one LSTM over the H*W tokens, no fc."""

        def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=True, **kwargs):
            super().__init__()
            self.rnn = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional)

        def forward(self, x):
            B, H, W, C = x.shape
            x, _ = self.rnn(x.reshape(B, -1, C))
            return x.reshape(B, H, W, -1)

    class VanillaSequencerPE(Sequencer2d):
        """VanillaSequencer with ``ape=True``: x + absolute_pos_embed after the stem."""

        def __init__(self, grid, **kwargs):
            super().__init__(**kwargs)
            self.absolute_pos_embed = nn.Parameter(0.02 * torch.randn(1, grid[0], grid[1], kwargs["embed_dims"][0]))

        def forward_features(self, x):
            x = self.stem(x) + self.absolute_pos_embed
            return self.norm(self.stages(x))

    return dict(
        lstm=LSTM2d,
        gru=rnn2d(nn.GRU),
        rnn=rnn2d(nn.RNN),
        lstm1d=LSTM1d,
        Sequencer2d=Sequencer2d,
        VanillaSequencerPE=VanillaSequencerPE,
    )


def torch_kwargs(arch, refs, image_size):
    """timm Sequencer2d kwargs (+ class) for a Keras architecture dict."""
    arch = dict(arch)
    mixer = arch.pop("token_mixer", "2d")
    pe = arch.pop("position_embedding", False)
    rnn_type = arch.pop("rnn_type", "lstm")
    kwargs = dict(arch, rnn_layer=refs["lstm1d"] if mixer == "1d" else refs[rnn_type])
    if mixer == "1d":
        kwargs["with_fc"] = False
    if pe:
        stride = arch["patch_sizes"][0]
        return refs["VanillaSequencerPE"], dict(kwargs, grid=(image_size // stride,) * 2)
    return refs["Sequencer2d"], kwargs


@requires_timm
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="torch-only check, backend-independent: run once (on the jax pass)",
)
def test_official_parameter_counts():
    import torch

    refs = _torch_references()
    for name, expected in OFFICIAL_PARAMS.items():
        spec = registry.MODEL_REGISTRY[name]
        cls, kwargs = torch_kwargs(official_arch(name), refs, spec.input_size)
        classes = spec.defaults.get("classes", 1000)
        with torch.device("meta"):  # shapes only, no memory or init time
            model = cls(num_classes=classes, **kwargs)
        assert sum(p.numel() for p in model.parameters()) == expected, name


# Tiny versions of the variants for numerical parity with torch (every option the
# registry uses: cells, unions, fc, direction, 1-D mixer, position embedding,
# stem norm and blockless "pointwise linear" stages).
_TINY = tiny_arch(3, width=8, hidden=2, mlp_ratio=2.0)
PARITY_CASES = {
    "gru_add": dict(_TINY, rnn_type="gru", union="add"),
    "rnn_unidirectional": dict(_TINY, rnn_type="rnn", bidirectional=False),
    "without_fc": dict(_TINY, with_fc=False),
    "vertical": dict(_TINY, hidden_sizes=(4, 6, 6), union="vertical", with_fc=False),
    "horizontal": dict(_TINY, hidden_sizes=(4, 6, 6), union="horizontal", with_fc=False),
    "vanilla_pe": dict(_TINY, hidden_sizes=(4, 6, 6), token_mixer="1d", with_fc=False, position_embedding=True),
    "cifar": dict(_TINY, layers=(1, 1, 0), patch_sizes=(4, 2, 1), stem_norm=True),
}


@requires_timm
@pytest.mark.parametrize("case", quick_first(sorted(PARITY_CASES)))
def test_parity_with_torch_reference(case):
    import torch

    from keras_sequencer.conversion import load_state_dict
    from tests.helpers import state_dict_numpy, timm_forward

    arch = PARITY_CASES[case]
    size = 28
    cls, kwargs = torch_kwargs(arch, _torch_references(), size)
    torch.manual_seed(0)
    reference = cls(num_classes=5, **kwargs).eval()
    with torch.no_grad():  # LayerNorms / head start at 1, 0: make every tensor matter
        for pname, param in reference.named_parameters():
            if "norm" in pname or pname.startswith("head"):
                param.add_(0.2 * torch.randn(param.shape))
    model = keras_sequencer.Sequencer2D(**arch, classes=5, classifier_activation=None, input_shape=(size, size, 3))
    load_state_dict(model, state_dict_numpy(reference))
    images = random_images(2, size, size)
    expected = timm_forward(reference, images)
    np.testing.assert_allclose(to_numpy(model(images)), expected, atol=2e-5, rtol=1e-4)
    assert np.abs(expected).max() > 1e-2  # the comparison is not of two near-zero outputs


# ------------------------------------------------ every registered model --
def small_input_size(name):
    """Twice the model's total stride: the smallest input with a 2x2 token grid."""
    return 2 * int(np.prod(official_arch(name)["patch_sizes"]))


def expected_keras_params(name, size):
    """The official count less the torch-only biases, and for a position
    embedding built at ``size`` instead of the registered input size, less the
    embedding rows that size does not have."""
    spec, arch = registry.MODEL_REGISTRY[name], official_arch(name)
    expected = OFFICIAL_PARAMS[name] - torch_only_biases(arch)
    if arch.get("position_embedding"):
        patch = arch["patch_sizes"][0]
        grids = (spec.input_size // patch) ** 2 - (size // patch) ** 2
        expected -= grids * arch["embed_dims"][0]
    return expected


def check_forward_train_and_reload(model, images, labels, classes, eagerly=False):
    """Softmax forward pass, one SGD step that moves every trainable weight, and
    a .keras round trip with the same outputs.

    ``eagerly`` runs the forward passes and the training step op by op, without
    compiling (``run_eagerly`` and, on JAX, ``jax.disable_jit``): the same
    computation, but for a full-size model on JAX / TensorFlow cheaper than
    tracing and compiling its forward and training functions for a single call
    each. (Saving and loading stay outside ``jax.disable_jit``: rebuilding the
    loaded model's initializers op by op would cost more.)"""
    op_by_op = _op_by_op if eagerly else contextlib.nullcontext
    with op_by_op():
        probs = run_model(model, images)
    assert probs.shape == (len(images), classes)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)

    before = [to_numpy(w).copy() for w in model.trainable_weights]
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="sparse_categorical_crossentropy",
        run_eagerly=eagerly,
    )
    with op_by_op():
        loss = float(to_numpy(model.train_on_batch(images, labels)))
    assert np.isfinite(loss)
    changed = [not np.array_equal(b, to_numpy(w)) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]

    reloaded = save_and_reload(model)
    with op_by_op():
        np.testing.assert_allclose(run_model(reloaded, images), run_model(model, images), atol=1e-6)


def _op_by_op():
    """On JAX, ``jax.disable_jit()`` (lax.scan becomes a Python loop, nothing is
    compiled); elsewhere nothing."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.disable_jit()
    return contextlib.nullcontext()


def _test_size_arch(name, factor=8):
    """``name``'s variant at test size: widths / 8 and one block (in the first stage;
    later stages keep their patch merging / pointwise linear layers); cell, union, fc,
    direction, 1-D mixer, stem norm and position embedding unchanged."""
    arch = official_arch(name)
    return dict(
        arch,
        layers=(1,) + (0,) * (len(arch["layers"]) - 1),
        embed_dims=tuple(d // factor for d in arch["embed_dims"]),
        hidden_sizes=tuple(h // factor for h in arch["hidden_sizes"]),
    )


def _distinct_test_models():
    """Registered names grouped by identical test-size architecture (e.g. S, M, L and
    their _392 twins differ only in depth), so each distinct network runs once."""
    groups = {}
    for name in keras_sequencer.list_models():
        groups.setdefault(repr(sorted(_test_size_arch(name).items())), []).append(name)
    return list(groups.values())


def test_test_models_cover_registry():
    names = [n for group in _distinct_test_models() for n in group]
    assert sorted(names) == keras_sequencer.list_models()


# The quick tier runs three networks: the published one (S, M, L and their _392
# twins), a GRU one and a VanillaSequencer; CI runs every distinct network.
_QUICK = {"sequencer2d_s", "gru_sequencer2d_s", "v_sequencer_s"}


@pytest.mark.parametrize(
    "names",
    [g if _QUICK & set(g) else pytest.param(g, marks=pytest.mark.slow) for g in _distinct_test_models()],
    ids="+".join,
)
def test_every_registered_architecture_narrowed(names):
    """Forward, one training step and a .keras round trip of each registered
    variant (narrowed, see _test_size_arch) at twice its total stride."""
    spec = registry.MODEL_REGISTRY[names[0]]
    arch = _test_size_arch(names[0])
    size = 2 * int(np.prod(arch["patch_sizes"]))
    options = dict(spec.defaults, classes=3, input_shape=(size, size, 3), name=names[0])
    model = keras_sequencer.Sequencer2D(**arch, **options)
    check_forward_train_and_reload(model, random_images(4, size, size), np.array([0, 1, 2, 1]), 3)


def same_network_at_small_input(name):
    """The registered name, other than ``name``, that is the same network as
    ``name`` once both are built at the test's small input (same builder,
    architecture and defaults; only the registered input size differs), e.g.
    ``sequencer2d_s`` for ``sequencer2d_s_392``; None if there is none."""
    spec = registry.MODEL_REGISTRY[name]
    for other in keras_sequencer.list_models():
        o = registry.MODEL_REGISTRY[other]
        if (
            other != name
            and not o.fixed_input_size
            and (o.builder, o.arch, o.defaults) == (spec.builder, spec.arch, spec.defaults)
        ):
            return other
    return None


def test_fixed_size_twins():
    twins = {n: same_network_at_small_input(n) for n in keras_sequencer.list_models()}
    assert {n: t for n, t in twins.items() if t} == {f"sequencer2d_{s}_392": f"sequencer2d_{s}" for s in "sml"}


def registered_at_small_input(name):
    """``(model, size, classes)``: the registered model itself (full width and
    depth) at a small input, twice its total stride (the fixed-size names are
    given that ``input_shape``)."""
    spec = registry.MODEL_REGISTRY[name]
    size = small_input_size(name)
    options = dict(input_shape=(size, size, 3)) if spec.fixed_input_size else {}
    model = keras_sequencer.create_model(name, **options)
    assert model.name == name
    assert model.input_shape == (None, size if options else None, size if options else None, 3)
    return model, size, spec.defaults.get("classes", 1000)


@pytest.mark.slow
@pytest.mark.parametrize("name", keras_sequencer.list_models())
def test_every_registered_model_at_full_size(name):
    """The registered model itself (``create_model``, full width and depth, at a small
    input): its name, output shape and the official parameter count; then a forward
    pass, one training step and a .keras round trip, run op by op (compiling a
    full-size training step for a single call costs more than running it).

    Each name is built once, in torch's pass (``run_in_the_pass_of``), where running
    a full-size model op by op costs least: the parameter count does not depend on the backend
    (the layers build the same variables everywhere; tests/kernels/test_dispatch.py
    keeps backend branches out of them), and every backend runs each of these networks
    narrowed (``test_every_registered_architecture_narrowed``), so at full size only the
    widths and depths are new. The ``_392`` names at the small input are the very
    network of their twin (``same_network_at_small_input``, so the same count at any
    input size): run forward only; their training step and round trip are the twin's."""
    run_in_the_pass_of("torch")
    model, size, classes = registered_at_small_input(name)
    assert model.output_shape == (None, classes)
    assert model.count_params() == expected_keras_params(name, size)
    images = random_images(2, size, size)
    if same_network_at_small_input(name):
        with _op_by_op():
            assert run_model(model, images).shape == (2, classes)
        return
    check_forward_train_and_reload(model, images, np.array([0, 1]), classes, eagerly=True)


@pytest.mark.parametrize("name", [n for n, s in registry.MODEL_REGISTRY.items() if s.fixed_input_size])
def test_fixed_size_names_default_to_their_input_size(name, monkeypatch):
    spec = registry.MODEL_REGISTRY[name]
    calls = []
    monkeypatch.setitem(registry.BUILDERS, variants.get_variant(name).family, lambda **kw: calls.append(kw))
    keras_sequencer.create_model(name)
    keras_sequencer.create_model(name, input_shape=(28, 28, 3))
    assert [kw["input_shape"] for kw in calls] == [(spec.input_size, spec.input_size, 3), (28, 28, 3)]
    assert spec.input_size == (392 if name.endswith("_392") else 224)


def test_vanilla_layers():
    from keras_sequencer import layers

    x = random_images(2, 3, 4, 6)
    mixer = layers.BiLSTM1D(3)
    y = to_numpy(mixer(x))
    # one sequence over the row-major flattened tokens: the last token of the
    # forward direction has seen every token, so changing the first token moves it.
    x2 = x.copy()
    x2[:, 0, 0] += 1.0
    moved = np.abs(to_numpy(mixer(x2)) - y).max(axis=-1)
    assert y.shape == (2, 3, 4, 6) and (moved > 1e-6).all()
    with pytest.raises(ValueError, match="outputs 4 channels"):
        layers.BiLSTM1D(2)(x)
    assert to_numpy(layers.BiLSTM1D(2, with_fc=True)(x)).shape == (2, 3, 4, 6)
    block = layers.VanillaSequencerBlock(3, mlp_ratio=2.0)
    assert "union" not in block.get_config()
    clone = layers.VanillaSequencerBlock.from_config(block.get_config())
    assert isinstance(clone.rnn_tokens, layers.BiLSTM1D)
    pos = layers.PositionEmbedding()
    np.testing.assert_allclose(to_numpy(pos(x)) - x, to_numpy(pos.embedding)[[0, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="3x4 grid"):
        pos(random_images(2, 4, 3, 6))
