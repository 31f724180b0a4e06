from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.backend import keras_module
from models.builder import apply_fine_tuning, build_backbone, create_model, encode_targets
from models.errors import ModelError, WeightsError
from models.registry import get_backbone
from models.trial_config import Augmentation, TrialConfig
from models.weights import WeightsPolicy, parse_weights

keras = keras_module()


@pytest.fixture(scope="module")
def mobilenet_v2_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights file for mobilenet_v2 at 32 px, made here (ImageNet cannot be downloaded)."""
    keras.utils.set_random_seed(7)
    backbone = build_backbone(get_backbone("mobilenet_v2"), 32, WeightsPolicy("none"))
    path = tmp_path_factory.mktemp("weights") / "mobilenet_v2.weights.h5"
    backbone.save_weights(path)
    return path


def _n_trainable(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_weights_file_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    original = build_backbone(get_backbone("efficientnet_b0"), 32, WeightsPolicy("none"))
    path = tmp_path / "effnet.weights.h5"
    original.save_weights(path)
    model = create_model(TrialConfig("efficientnet_b0", fine_tune=0.0), 4, 32, str(path))
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 32, 32, 3)).astype("float32")
    # The model's backbone sees the preprocessed pixels (EfficientNet normalises inside).
    np.testing.assert_array_equal(
        np.asarray(model.get_layer("backbone")(pixels, training=False)),
        np.asarray(original(pixels, training=False)),
    )


def test_frozen_backbone_trains_only_the_head(mobilenet_v2_weights: Path) -> None:
    config = TrialConfig("mobilenet_v2", head_depth=1, head_width=16, fine_tune=0.0)
    model = create_model(config, 4, 32, str(mobilenet_v2_weights))
    head = model.get_layer("head")
    assert _n_trainable(model) == _n_trainable(head) == 1280 * 16 + 16 + 16 * 4 + 4
    assert not model.get_layer("backbone").trainable


def test_fine_tuning_trains_top_layers_with_batch_norm_frozen(mobilenet_v2_weights: Path) -> None:
    counts = {}
    for fraction in (0.0, 0.25, 1.0):
        model = create_model(
            TrialConfig("mobilenet_v2", head_depth=0, fine_tune=fraction),
            4,
            32,
            str(mobilenet_v2_weights),
        )
        backbone = model.get_layer("backbone")
        counts[fraction] = _n_trainable(model)
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                assert not layer.trainable
        if fraction == 0.25:
            trainable_layers = [
                i for i, layer in enumerate(backbone.layers) if layer.trainable and layer.weights
            ]
            assert min(trainable_layers) >= int(0.75 * len(backbone.layers)) - 1
    assert counts[0.0] < counts[0.25] < counts[1.0]
    all_bn = sum(
        int(np.prod(w.shape))
        for layer in model.get_layer("backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for w in layer.weights
    )
    rates = sum(1 for w in model.get_layer("head").weights if w.path.endswith("/rate"))
    assert rates == 1  # the head's dropout rate, a variable so trials share compiled steps
    assert counts[1.0] == model.count_params() - all_bn - rates


def test_fine_tuning_by_layer_count() -> None:
    backbone = build_backbone(get_backbone("small_cnn"), 32, WeightsPolicy("none"))
    assert apply_fine_tuning(backbone, layers=3, keep_bn_frozen=False) == 3
    assert [layer.trainable for layer in backbone.layers[-3:]] == [True, True, True]
    assert not any(layer.trainable for layer in backbone.layers[:-3])


def test_from_scratch_trains_batch_norm_with_faster_momentum() -> None:
    model = create_model(TrialConfig("mobilenet_v3_small", fine_tune=1.0), 4, 32, "none")
    bns = [
        layer
        for layer in model.get_layer("backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(layer.trainable and layer.momentum == 0.9 for layer in bns)


def test_frozen_backbone_without_weights_is_refused() -> None:
    with pytest.raises(ModelError, match="constant"):
        create_model(TrialConfig("mobilenet", fine_tune=0.0), 4, 32, "none")


def test_input_below_minimum_is_refused() -> None:
    with pytest.raises(ModelError, match="minimum of 71px"):
        create_model(TrialConfig("xception", fine_tune=1.0), 4, 64, "none")


# A closed loopback port: every download through this "proxy" is refused at once, and no
# connection leaves the machine (the tests must hold with network access too).
UNREACHABLE_PROXY = "http://127.0.0.1:9"


def block_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send urllib (what keras' get_file downloads with) to a proxy that refuses.

    urllib builds its global opener, and reads the proxy variables, on its first request:
    dropping it makes the next request see these variables.
    """
    import urllib.request

    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, UNREACHABLE_PROXY)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "")  # an empty value removes any bypass list
    monkeypatch.setattr(urllib.request, "_opener", None)


def test_imagenet_offline_names_the_file_and_the_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights that cannot be downloaded: one line naming the file Keras looks for, where,
    and the two other weights options."""
    block_downloads(monkeypatch)
    with pytest.raises(WeightsError) as info:
        create_model(TrialConfig("mobilenet_v3_small"), 4, 64, "imagenet")
    message = str(info.value)
    assert "refused" in message  # it tried to download, and only the loopback proxy answered
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in message
    assert "keras-home" in message  # $KERAS_HOME/models, set by the test fixture
    assert "'none'" in message and "weights.h5" in message
    assert "\n" not in message


def test_missing_or_wrong_weights_file_is_refused(
    tmp_path: Path, mobilenet_v2_weights: Path
) -> None:
    with pytest.raises(WeightsError, match="not found"):
        parse_weights(tmp_path / "nope.weights.h5")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(WeightsError, match="must end"):
        parse_weights(tmp_path / "w.txt")
    with pytest.raises(WeightsError, match="cannot load"):
        create_model(TrialConfig("efficientnet_b0"), 4, 32, str(mobilenet_v2_weights))


def test_head_depth_zero_is_a_linear_classifier() -> None:
    model = create_model(
        TrialConfig("small_cnn", head_depth=0, dropout=0.0, fine_tune=1.0), 4, 32, "none"
    )
    dense = [
        layer for layer in model.get_layer("head").layers if isinstance(layer, keras.layers.Dense)
    ]
    assert len(dense) == 1 and dense[0].units == 4


def test_head_layers_width_dropout_and_batch_norm() -> None:
    config = TrialConfig(
        "small_cnn",
        head_depth=3,
        head_width=32,
        dropout=0.2,
        head_batchnorm=True,
        head_activation="gelu",
        fine_tune=1.0,
    )
    head = create_model(config, 5, 32, "none").get_layer("head")
    dense = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [32, 32, 32, 5]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in head.layers) == 3
    from models.layers import RateDropout

    rates = [layer.rate for layer in head.layers if isinstance(layer, RateDropout)]
    assert len(rates) == 4 and all(float(np.asarray(r)) == pytest.approx(0.2) for r in rates)


def test_output_stays_float32_under_mixed_precision() -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = create_model(TrialConfig("small_cnn", fine_tune=1.0), 4, 32, "none")
        assert model.get_layer("head").get_layer("dense_1").compute_dtype == "float16"
        probs = model(np.zeros((1, 32, 32, 3), "float32"))
        assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_optimizer_and_label_smoothing() -> None:
    config = TrialConfig(
        "small_cnn", fine_tune=1.0, optimizer="adamw", label_smoothing=0.1, learning_rate=3e-4
    )
    model = create_model(config, 4, 32, "none")
    from models.layers import DecayAdam

    assert isinstance(model.optimizer, DecayAdam)
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    y = np.array([0, 3])
    smoothed = encode_targets(y, 4, config)
    np.testing.assert_allclose(
        smoothed, [[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.025, 0.925]]
    )
    np.testing.assert_array_equal(encode_targets(y, 4, TrialConfig("small_cnn")), np.eye(4)[y])
    # The same loss as Keras's label smoothing, which would bake the value into the step.
    probs = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.4]], "float32")
    baked = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(4)[y], probs)
    ours = model.loss(smoothed, probs)
    assert float(ours) == pytest.approx(float(baked), rel=1e-5)


def test_augmentation_is_in_the_graph_and_inactive_at_inference() -> None:
    aug = Augmentation(flip=True, rotation=0.05, zoom=0.1, translation=0.05, contrast=0.1)
    model = create_model(
        TrialConfig("small_cnn", fine_tune=1.0), 4, 32, "none", augmentation=aug, seed=1
    )
    assert model.get_layer("augment") is not None
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(pixels, verbose=0), model.predict(pixels, verbose=0))


@pytest.mark.parametrize("backbone", ["small_cnn", "mobilenet_v3_small"])
def test_saved_model_reloads_in_safe_mode_with_class_names(tmp_path: Path, backbone: str) -> None:
    model = create_model(
        TrialConfig(backbone, fine_tune=1.0), 3, 32, "none", class_names=["a", "b", "c"]
    )
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    assert loaded.get_layer("class_probabilities").class_names == ["a", "b", "c"]
    pixels = np.random.default_rng(0).integers(0, 256, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"head_depth": 5},
        {"dropout": 1.5},
        {"learning_rate": 0.0},
        {"optimizer": "sgd"},
        {"fine_tune": 2.0},
        {"batch_size": 0},
    ],
)
def test_trial_config_rejects_out_of_range_values(kwargs: dict) -> None:
    with pytest.raises(ModelError):
        TrialConfig("small_cnn", **kwargs)


def test_trial_config_round_trips_through_a_dict() -> None:
    config = TrialConfig("xception", head_depth=3, head_width=128, dropout=0.5, learning_rate=2e-5)
    assert TrialConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ModelError, match="unknown"):
        TrialConfig.from_dict({"backbone": "x", "depth": 3})


@pytest.mark.parametrize("mode_of", ["densenet121", "xception"])
def test_in_graph_preprocessing_reloads_in_safe_mode(tmp_path: Path, mode_of: str) -> None:
    """DenseNet's ImageNet normalisation and the "tf" scaling survive a save and a safe load."""
    from models.preprocessing import build_preprocessing

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, build_preprocessing(get_backbone(mode_of))(inputs))
    model.save(tmp_path / "p.keras")
    loaded = keras.saving.load_model(tmp_path / "p.keras", safe_mode=True)
    pixels = np.random.default_rng(2).uniform(0, 255, size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(
        loaded.predict(pixels, verbose=0), model.predict(pixels, verbose=0), atol=1e-6
    )


@pytest.mark.backends
def test_rate_dropout_drops_its_rate_keeps_the_mean_and_is_identity_at_inference() -> None:
    from models.layers import RateDropout

    layer = RateDropout(0.4, seed=1)
    x = np.ones((4000, 8), "float32")
    trained = keras.ops.convert_to_numpy(layer(x, training=True))
    assert abs(float((trained == 0).mean()) - 0.4) < 0.02
    assert abs(float(trained.mean()) - 1.0) < 0.03
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    layer.rate.assign(0.0)  # a variable: another trial's rate without another layer
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=True)), x)
    again = RateDropout.from_config(layer.get_config())
    assert again.initial_rate == 0.4 and again.seed == 1


@pytest.mark.backends
def test_a_model_with_every_augmentation_keeps_xla_where_the_backend_compiles() -> None:
    """Keras marks its rotation, zoom and translation layers unfit for jit; on JAX one of
    them made the whole train step eager (Xception fine-tuning: 137 s an epoch on an H200
    against 1.2 s compiled). Every augmentation must leave a JAX model compiled."""
    config = TrialConfig(backbone="small_cnn", head_depth=0, fine_tune=1.0)
    augmentation = Augmentation(flip=True, rotation=0.05, zoom=0.1, translation=0.1, contrast=0.1)
    model = create_model(config, 4, 32, WeightsPolicy("none"), augmentation=augmentation)
    x = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    model.fit(x, encode_targets(np.arange(8) % 4, 4, config), batch_size=4, epochs=1, verbose=0)
    if keras.backend.backend() == "jax":
        assert model.jit_compile is True


@pytest.mark.backends
@pytest.mark.parametrize("decay", [0.0, 0.05])
def test_decay_adam_steps_as_keras_adamw_and_adam(decay: float) -> None:
    """One optimizer for adam and adamw, its decay a variable: the same updates as Keras's
    AdamW (or Adam at 0), and it survives a config round trip."""
    from models.layers import DecayAdam

    def trained(optimizer) -> np.ndarray:  # noqa: ANN001
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
        x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
        model.fit(x, x[:, :3] * 2.0, batch_size=8, epochs=2, verbose=0)
        return model.get_weights()[0]

    ours = trained(DecayAdam(learning_rate=0.05, decay=decay))
    if decay:
        theirs = trained(keras.optimizers.AdamW(learning_rate=0.05, weight_decay=decay))
    else:
        theirs = trained(keras.optimizers.Adam(learning_rate=0.05))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    again = DecayAdam.from_config(DecayAdam(learning_rate=0.05, decay=decay).get_config())
    assert again.initial_decay == decay


def test_training_state_built_before_fit_traces_the_train_step_once() -> None:
    """`build_training_state` creates the metric, loss and optimizer variables from the
    model's stated output (no symbolic pass through the model), so that TensorFlow traces
    the first train step once, not twice; elsewhere it builds the optimizer."""
    from models import builder

    keras = keras_module()
    config = TrialConfig(backbone="small_cnn", head_depth=1, head_width=16, fine_tune=1.0)
    x = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    y = encode_targets(np.arange(8) % 4, 4, config)
    model = create_model(config, 4, 32, "none")
    builder.build_training_state(model, x, y)
    assert model.optimizer.built
    if keras.backend.backend() != "tensorflow":
        return
    assert model._compile_metrics.built and model._compile_loss.built
    traced, train_step = [], model.train_step
    model.train_step = lambda data: traced.append(1) or train_step(data)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert len(traced) == 1
    assert builder._build_from_outputs(create_model(config, 4, 32, "none"), x, y)
