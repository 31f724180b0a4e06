"""`train-best --format keras,savedmodel,onnx,litert`: the trained model in the formats a
deployment runs, each loaded back in its own runtime and checked against Keras.

Every export starts from `models.calibration.inference_model` (no augmentation, inference
mode everywhere) and so carries the temperature, when there is one, in its graph:

- ``savedmodel``: Keras' ``model.export(format="tf_saved_model")``, a folder; checked through
  its ``serve`` signature in TensorFlow.
- ``onnx``: ``tf2onnx.convert.from_keras`` (Keras' own ONNX export leaves a ``Normalization``
  layer's mean and variance as graph inputs), with metadata that `tumor-predict` checks
  (producer, class names, input size, temperature); checked in onnxruntime.
- ``litert``: Keras' ``model.export(format="litert")``, plain TFLite builtin ops (no Flex);
  checked in ai-edge-litert's interpreter. A ``.tflite`` file holds no class names: they are
  in ``metrics.json``.

Each format's probabilities must equal the Keras model's within `TOLERANCE` on the same
images; a file that does not is removed, and train-best reports it (exit 1) after writing
and recording everything else.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common.progress import log
from search.errors import InputError

FORMATS = ("keras", "savedmodel", "onnx", "litert")
FILE_NAMES = {
    "keras": "model.keras",
    "savedmodel": "saved_model",
    "onnx": "model.onnx",
    "litert": "model.tflite",
}
TOLERANCE = 1e-4
ONNX_OPSET = 17
# What each format needs installed here (it is also checked in that runtime).
NEEDS = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "litert": ("ai_edge_litert",)}


def parse_formats(text: str) -> tuple[str, ...]:
    """``keras,onnx`` -> ("keras", "onnx"); model.keras is always written (the others are
    made from it), so it comes first whether listed or not.

    Raises:
        InputError: an unknown or empty format name.
    """
    names = [part.strip().lower() for part in text.split(",")]
    for name in names:
        if name not in FORMATS:
            raise InputError(f"--format: unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(["keras", *names]))


def check_formats(formats: tuple[str, ...], backbone: str) -> None:
    """Refuse, before any training, a format this backend, backbone or installation cannot
    write (`InputError`, one line)."""
    from models.backend import keras_module

    wanted = [f for f in formats if f != "keras"]
    if not wanted:
        return
    backend = keras_module().backend.backend()
    if backend != "tensorflow":
        raise InputError(
            f"--format {','.join(wanted)} needs the TensorFlow backend (this is {backend}): "
            "write model.keras here, then run train-best again with KERAS_BACKEND=tensorflow"
        )
    if "onnx" in wanted and backbone.startswith("convnext"):
        raise InputError(
            f"--format onnx: {backbone} cannot be converted to ONNX from TensorFlow (its "
            "grouped convolutions compile to XLA); use savedmodel or litert"
        )
    for name in wanted:
        missing = [m for m in NEEDS.get(name, ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise InputError(
                f"--format {name} needs {', '.join(missing)}: pip install 'tumor-search[export]'"
            )


def float32_for_exports(config: Any, formats: tuple[str, ...]) -> Any:
    """The study config to retrain with: mixed precision off when a format other than keras
    is asked for (exported graphs and their runtimes compute in float32, and must agree with
    the Keras model within `TOLERANCE`)."""
    from models.backend import gpu_count

    mixed = config.training.mixed_precision
    if formats == ("keras",) or mixed == "off" or (mixed == "auto" and gpu_count() == 0):
        return config
    log("exports compute in float32: training without mixed precision")
    training = config.training.model_copy(update={"mixed_precision": "off"})
    return config.model_copy(update={"training": training})


def write_formats(
    model: Any, formats: tuple[str, ...], out: Path, class_names: list[str], pixels: np.ndarray
) -> dict[str, dict[str, Any]]:
    """Write each format other than keras into `out`, load it back in its runtime and
    compare its probabilities on `pixels` (raw 0-255 images) with `model`'s.

    Returns:
        Per format: its path (relative to `out`), size in MB and the largest difference; or,
        for a format that failed or differs by more than `TOLERANCE` (its file removed),
        ``path`` None and the ``error``.
    """
    from models.calibration import inference_model, temperature_of

    wanted = [f for f in formats if f != "keras"]
    if not wanted:
        return {}
    inference = inference_model(model)
    x = pixels.astype(np.float32)
    expected = np.asarray(inference.predict_on_batch(x), dtype=np.float64)
    meta = {
        "producer": "tumor-search",
        "format_version": "1",
        "class_names": json.dumps(list(class_names)),
        "input_size": str(int(model.inputs[0].shape[1])),
        "temperature": repr(temperature_of(model)),
    }
    return {name: _write_one(name, inference, out, meta, x, expected) for name in wanted}


def _write_one(
    name: str, model: Any, out: Path, meta: dict[str, str], x: np.ndarray, expected: np.ndarray
) -> dict[str, Any]:
    """One format written, run in its runtime and compared; ``error`` says why it was not
    kept (its file is removed)."""
    target = out / FILE_NAMES[name]
    writer, runner = WRITERS[name]
    try:
        _replace(target, lambda tmp: writer(model, tmp, meta))
        got = np.asarray(runner(target, x), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - one format's failure is reported, not raised
        _remove(target)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log(f"--format {name} failed: {reason}")
        return {"path": None, "error": reason}
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= TOLERANCE:
        _remove(target)
        reason = f"probabilities differ from the Keras model's by {diff:.2e} (over {TOLERANCE:g})"
        log(f"--format {name}: {reason}; {target.name} was not kept")
        return {"path": None, "error": reason, "max_abs_diff": diff}
    size = round(_size(target) / 1e6, 3)
    log(f"wrote {target} ({size} MB; equals Keras within {diff:.1e})")
    return {"path": target.name, "size_mb": size, "max_abs_diff": diff}


def failures(written: dict[str, dict[str, Any]]) -> str | None:
    """One line naming the formats that were not kept, or None."""
    failed = [f"{name} ({entry['error']})" for name, entry in written.items() if entry.get("error")]
    return "not written: " + "; ".join(failed) if failed else None


def _replace(target: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary path beside `target` (file or folder), then rename it over
    `target`; nothing partial is left on failure."""
    from common.disk import raise_when_full

    folder = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    tmp = folder / target.name
    try:
        with raise_when_full(target):
            write(tmp)
            _remove(target)
            tmp.rename(target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# ---------------------------------------------------------------- writers and runtimes


def _write_savedmodel(model: Any, path: Path, meta: dict[str, str]) -> None:
    model.export(str(path), format="tf_saved_model", verbose=False)


def _run_savedmodel(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held: its variables die with it
    return loaded.serve(tf.constant(x)).numpy()


def _write_litert(model: Any, path: Path, meta: dict[str, str]) -> None:
    tmp = path.with_suffix(".tflite")  # Keras insists on the extension
    model.export(str(tmp), format="litert", verbose=False)
    if tmp != path:
        tmp.rename(path)


def _run_litert(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from models.backend import quiet_stderr

    with quiet_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_path=str(path))
        entry = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(entry["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(entry["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _write_onnx(model: Any, path: Path, meta: dict[str, str]) -> None:
    import onnx
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    with warnings.catch_warnings():  # it asks numpy for np.object, which warns
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()  # numpy 2 fixes that tf2onnx 1.17 lacks (Keras applies them the same)
    size = tuple(model.inputs[0].shape[1:])
    spec = (tf.TensorSpec((None, *size), tf.float32, name="pixels"),)
    proto, _ = tf2onnx.convert.from_keras(
        model, input_signature=spec, opset=ONNX_OPSET, custom_op_handlers={"Erfc": (_erfc, [])}
    )
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)  # an op tf2onnx left unconverted fails here
    onnx.save(proto, str(path))


def _erfc(ctx: Any, node: Any, name: str, args: Any) -> None:
    """TensorFlow's exact GELU uses Erfc, which ONNX lacks: erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    node.type = "Erf"
    dtype = ctx.get_dtype(node.output[0])
    one = ctx.make_const(
        utils.make_name("one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype))
    )
    sub = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(node.name))
    ctx.replace_inputs(sub, [one.output[0], node.output[0]])
    ctx.copy_shape(node.output[0], sub.output[0])
    ctx.set_dtype(sub.output[0], dtype)


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


WRITERS: dict[str, tuple[Callable[..., None], Callable[[Path, np.ndarray], np.ndarray]]] = {
    "savedmodel": (_write_savedmodel, _run_savedmodel),
    "onnx": (_write_onnx, _run_onnx),
    "litert": (_write_litert, _run_litert),
}
