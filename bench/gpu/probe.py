"""The child process of parts (a) and (b): one Keras backend (``KERAS_BACKEND``), one model.

    python -m bench.gpu.probe train --size 224 --batch 64 --seconds 55
    python -m bench.gpu.probe features --size 224 --images 2048 --seconds 35 --workdir DIR

Each figure is printed on stdout as soon as it is known, as one ``@@ {json}`` line, so that
the parent keeps what was measured when it must stop this process at the end of its box.
The model is the service's: `models.builder.create_model` with a `TrialConfig`, the dtype
policy and XLA setting chosen as a trial's fit chooses them (`models.backend`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MARK = "@@ "
BACKBONE = "mobilenet_v2"
N_CLASSES = 4


def emit(**figures: Any) -> None:
    print(MARK + json.dumps(figures), flush=True)


def _setup(mixed: bool) -> tuple[Any, bool]:
    """Keras with the dtype policy and XLA flag a trial would use on this device."""
    from models import backend

    keras = backend.keras_module()
    try:
        policy = backend.configure_precision("on" if mixed else "off")
        jit = bool(backend.use_xla("auto"))
    except (TypeError, AttributeError):  # the plumbing changed its signature: say so, go on
        policy = "mixed_float16" if mixed else "float32"
        keras.mixed_precision.set_global_policy(policy)
        jit = False
    gpus = backend.gpu_count()
    emit(
        event="setup",
        backend=keras.backend.backend(),
        keras=keras.__version__,
        policy=str(policy),
        jit=jit,
        gpus=gpus,
    )
    return keras, jit


def _images(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return x, rng.integers(0, N_CLASSES, size=n).astype("int32")


def _fit_kwargs(x: np.ndarray, y: np.ndarray, labels: np.ndarray, batch: int) -> dict[str, Any]:
    """The training arguments of `Model.fit` as a trial passes them on this backend (`y`
    the encoded targets, `labels` the integer classes)."""
    try:
        from search.training.batching import fit_inputs
    except ImportError:  # before the service fed batches per backend: plain arrays
        return {"x": x, "y": y, "batch_size": batch, "shuffle": True}
    return fit_inputs(x, y, labels, batch, None, 0)


def _device_batches(keras: Any, kwargs: dict[str, Any]) -> Any:
    """The batches as a trial's fit makes them (Keras' data adapter), moved to the device."""
    from keras.src.trainers.data_adapters import get_data_adapter

    adapter = get_data_adapter(**kwargs)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        for batch in adapter.get_jax_iterator():
            yield jax.block_until_ready(jax.device_put(batch))
    elif backend == "torch":
        import torch
        from keras.src.backend.torch.core import get_device

        for batch in adapter.get_torch_dataloader():
            out = [t.to(get_device()) for t in batch]
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            yield out
    else:
        for batch in adapter.get_tf_dataset():
            yield [t.numpy() for t in batch]  # a copy to host waits for the batch


def _data_time(keras: Any, kwargs: dict[str, Any], budget: float) -> None:
    """Time per batch of the input alone: Keras' adapter (private API) and the copy."""
    start, n = time.perf_counter(), 0
    try:
        for _ in _device_batches(keras, kwargs):
            n += 1
            if time.perf_counter() - start > budget:
                break
    except Exception as exc:  # noqa: BLE001 - the fit below is still worth measuring
        emit(event="data_error", data_error=f"{type(exc).__name__}: {exc}"[:200])
        return
    seconds = time.perf_counter() - start
    emit(event="data", data_ms=1000 * seconds / max(n, 1), data_batches=n)


class _EpochTimes:
    """Seconds of each epoch of a `fit` (a Keras callback made on demand)."""

    def __new__(cls, keras: Any) -> Any:
        class Recorder(keras.callbacks.Callback):
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self._t)

        return Recorder()


def train(args: argparse.Namespace) -> None:
    """Compile time, steady step rate, data time and fit rate of MobileNetV2."""
    t0 = time.perf_counter()
    keras, jit = _setup(args.mixed)
    from models.builder import count_params, create_model, encode_targets
    from models.trial_config import TrialConfig

    config = TrialConfig(args.backbone, fine_tune=1.0, batch_size=args.batch, learning_rate=1e-3)
    model = create_model(config, N_CLASSES, args.size, "none", jit_compile=jit)
    emit(event="built", build_s=time.perf_counter() - t0, params=count_params(model)["total"])
    x, labels = _images(args.batch * args.fit_batches, args.size)
    y = encode_targets(labels, N_CLASSES, config)  # as a trial's fit feeds the loss
    xb, yb = x[: args.batch], y[: args.batch]
    t = time.perf_counter()
    model.train_on_batch(xb, yb)
    emit(event="compile", compile_s=time.perf_counter() - t)
    left = args.seconds - (time.perf_counter() - t0)
    steps, t = 0, time.perf_counter()
    while steps < args.steps and (steps < 2 or time.perf_counter() - t < 0.3 * left):
        model.train_on_batch(xb, yb)  # returns host floats: the step has finished
        steps += 1
    step_s = (time.perf_counter() - t) / steps
    emit(event="steps", step_ms=1000 * step_s, steps=steps, step_ips=args.batch / step_s)
    left = args.seconds - (time.perf_counter() - t0)
    batches = int(max(2, min(args.fit_batches, 0.35 * left / step_s)))
    n = batches * args.batch
    kwargs = _fit_kwargs(x[:n], y[:n], labels[:n], args.batch)
    _data_time(keras, kwargs, budget=0.1 * left)
    recorder = _EpochTimes(keras)
    model.fit(**kwargs, epochs=2, verbose=0, callbacks=[recorder])
    steady = recorder.seconds[-1]
    emit(
        event="fit", fit_ips=n / steady, fit_batches=batches, fit_first_epoch_s=recorder.seconds[0]
    )


def features(args: argparse.Namespace) -> None:
    """The compiled extractor's rate, then the feature cache's (a miss, then a hit), with
    the backbone's weights from a file (the cache keys weights by their bytes)."""
    t0 = time.perf_counter()
    keras, _ = _setup(args.mixed)
    from models.builder import build_backbone
    from models.registry import get_backbone
    from models.weights import WeightsPolicy, parse_weights
    from search.training.feature_cache import build_extractor, get_features

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{args.backbone}-{args.size}.weights.h5"
    build_backbone(get_backbone(args.backbone), args.size, WeightsPolicy("none")).save_weights(path)
    keras.backend.clear_session()
    policy = parse_weights(path)
    x, _ = _images(args.images, args.size, seed=1)
    n_val = max(1, args.images // 8)
    cache = str(workdir / f"feature-cache-{os.getpid()}")
    emit(event="weights", weights_s=time.perf_counter() - t0)
    # The compiled extractor's rate first: what a fast path would reach, known even when
    # the service's path below does not finish in the box.
    extractor = build_extractor(args.backbone, args.size, policy)
    t = time.perf_counter()
    extractor.predict_on_batch(x[: args.batch])
    emit(event="jit_compile", jit_compile_s=time.perf_counter() - t)
    t, done = time.perf_counter(), 0
    for start in range(0, len(x) - args.batch + 1, args.batch):
        extractor.predict_on_batch(x[start : start + args.batch])
        done += args.batch
    emit(event="jit", jit_ips=done / (time.perf_counter() - t))
    del extractor
    keras.backend.clear_session()
    first = get_features(args.backbone, policy, args.size, x[n_val:], x[:n_val], cache)
    emit(event="miss", miss_s=first.seconds, miss_ips=len(x) / first.seconds, hit=first.hit)
    again = get_features(args.backbone, policy, args.size, x[n_val:], x[:n_val], cache)
    emit(event="hit", hit_s=again.seconds, hit=again.hit)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=("train", "features"))
    parser.add_argument("--backbone", default=BACKBONE, help="registry name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0, help="this process's box")
    parser.add_argument("--steps", type=int, default=30, help="at most this many timed steps")
    parser.add_argument("--fit-batches", type=int, default=20, help="at most, per fit epoch")
    parser.add_argument("--images", type=int, default=2048, help="feature extraction images")
    parser.add_argument("--no-mixed", dest="mixed", action="store_false")
    parser.add_argument("--workdir", default=".")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (train if args.what == "train" else features)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
