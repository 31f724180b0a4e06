"""What the GPU machine gets of the real data and weights, in 64 MiB: `bench/gpu/real pack`.

The Brain Tumor MRI Dataset's JPEGs take 64 MB and Xception's float32 weights 87 MB, more
than one call of the device tool may carry together with the wheels (64 MiB in all). So:

- **images**: every image of the dataset folder, converted to 8-bit grayscale (the MRI
  slices are grayscale already) and re-encoded as WebP (quality 80: 36 MB for 7,019 images
  at 224 px, where JPEG at quality 85 takes 53 MB), in the same folders, so that the
  pooled near-dedup split is drawn on the GPU machine from exactly these pixels;
- **weights**: the layers of the backbone below one feature layer's cut (Xception's
  ``block13``: the layers the frozen features and the fine-tuned blocks use), each kernel
  as int8 with one float32 scale per output channel (symmetric, rounded to nearest), the
  rest (batch normalisation, biases) as float32. `unpack_weights` rebuilds a whole Keras
  weights file from it; the layers above the cut keep their random initialisation, so a
  study on the GPU machine must use feature layers at or below the cut.

    python -m bench.gpu.real pack --data /data/brain-mri --out .gpu-real
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

WEIGHTS_FILE = "{backbone}-{layer}.int8.npz"
IMAGES_FILE = "images.zip"  # one file, stored: the device tool counts each carried file's overhead
META_KEY = "__meta__"


def refuse(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit 2."""
    print(f"bench/gpu/real: {message}", file=sys.stderr)
    raise SystemExit(2)


def _images(data: Path) -> list[Path]:
    from tumor_predict.decode import IMAGE_EXTENSIONS, is_hidden_or_junk

    return sorted(
        p
        for p in data.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(is_hidden_or_junk(part) for part in p.relative_to(data).parts)
    )


def _encode(job: tuple[Path, Path, int, int]) -> int:
    """One image as grayscale WebP (at most `side` px a side); its size in bytes, 0 if the
    image cannot be read (left out, as `data check` would report it)."""
    from PIL import Image

    source, target, quality, side = job
    try:
        with Image.open(source) as image:
            gray = image.convert("L")
    except (OSError, ValueError):
        return 0
    if max(gray.size) > side:
        gray.thumbnail((side, side), Image.Resampling.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    gray.save(target, "WEBP", quality=quality, method=6)
    return target.stat().st_size


def pack_images(data: Path, out: Path, quality: int = 80, side: int = 224) -> dict[str, Any]:
    """Re-encode every image of `data` (same relative folders, ``.webp``) into one
    zip file of stored (not deflated) members, `out`/``images.zip``."""
    with tempfile.TemporaryDirectory(prefix="gpu-real-pack-") as tmp:
        stats = _encode_all(data, Path(tmp), quality, side)
        out.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(atomic := out / f".{IMAGES_FILE}.part", "w") as archive:
            for path in sorted(Path(tmp).rglob("*.webp")):
                archive.write(path, arcname=str(path.relative_to(tmp)))
        atomic.replace(out / IMAGES_FILE)
    return stats


def unpack_images(pack: Path, target: Path) -> Path:
    """The packed images as a dataset folder: `target`, extracted from ``images.zip``."""
    with zipfile.ZipFile(pack / IMAGES_FILE) as archive:
        archive.extractall(target)
    return target


def _encode_all(data: Path, out: Path, quality: int, side: int) -> dict[str, Any]:
    sources = _images(data) if data.is_dir() else []
    if not sources:
        refuse(f"{data}: no images (a dataset folder holds class folders of images)")
    targets = [out / p.relative_to(data).with_suffix(".webp") for p in sources]
    if len(set(targets)) != len(targets):
        refuse(f"{data}: two images differ only in their extension")
    jobs = [(s, t, quality, side) for s, t in zip(sources, targets, strict=True)]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        sizes = list(pool.map(_encode, jobs, chunksize=64))
    return {
        "images": sum(1 for s in sizes if s),
        "unreadable": sum(1 for s in sizes if not s),
        "bytes": sum(sizes),
        "quality": quality,
    }


def _channel_axis(shape: tuple[int, ...]) -> int:
    """Output channels: the last axis, or the one before for a depthwise kernel (…, C, 1)."""
    return len(shape) - 2 if shape[-1] == 1 and len(shape) > 2 else len(shape) - 1


def quantize(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel: (int8 values, float32 scales shaped to broadcast)."""
    axis = _channel_axis(array.shape)
    others = tuple(i for i in range(array.ndim) if i != axis)
    peak = np.max(np.abs(array), axis=others, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(array / scale), -127, 127).astype(np.int8), scale


def _below_cut(backbone: Any, record: Any, feature_layer: str) -> list[Any]:
    """The layers the cut model uses (all of them at ``top``)."""
    from models.registry import TOP

    if feature_layer == TOP:
        return list(backbone.layers)
    keras = __import__("keras")
    cut = record.cut(feature_layer)
    inner = keras.Model(backbone.inputs[0], backbone.get_layer(cut[0]).input)
    return list(inner.layers)


def pack_weights(backbone_name: str, feature_layer: str, out: Path) -> dict[str, Any]:
    """The imported weights of `backbone_name` below `feature_layer`'s cut, kernels as int8."""
    from models.registry import get_backbone
    from models.weights import WeightsPolicy
    from models.weights_store import provenance, stored_weights

    record = get_backbone(backbone_name)
    stored = stored_weights(backbone_name)
    if stored is None:
        refuse(f"no imported weights for {backbone_name}: run `tumor-search weights import`")
    model = record.factory(record.default_size, None)
    WeightsPolicy("file", stored).load_into(model)
    arrays: dict[str, np.ndarray] = {}
    for layer in _below_cut(model, record, feature_layer):
        for index, variable in enumerate(layer.weights):
            value = np.asarray(variable.numpy(), dtype=np.float32)
            key = f"{layer.name}/{index}"
            if value.ndim >= 2:
                arrays[f"{key}:q"], arrays[f"{key}:s"] = quantize(value)
            else:
                arrays[key] = value
    meta = {
        "backbone": backbone_name,
        "feature_layer": feature_layer,
        "source_sha256": (provenance(backbone_name) or {}).get("weights_sha256"),
    }
    path = out / WEIGHTS_FILE.format(backbone=backbone_name, layer=feature_layer)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    return {"path": str(path), "bytes": path.stat().st_size, "variables": len(arrays)}


def read_packed(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The packed file's record and its variables, dequantized to float32."""
    with np.load(path) as packed:
        meta = json.loads(str(packed[META_KEY]))
        out: dict[str, np.ndarray] = {}
        for key in packed.files:
            if key == META_KEY or key.endswith(":s"):
                continue
            if key.endswith(":q"):
                name = key[:-2]
                out[name] = packed[key].astype(np.float32) * packed[f"{name}:s"]
            else:
                out[key] = packed[key]
    return meta, out


def unpack_weights(path: Path, target: Path) -> dict[str, Any]:
    """A whole Keras weights file (``*.weights.h5``) of the packed backbone: the packed
    layers dequantized, the layers above the cut at their initialisation."""
    from models.registry import get_backbone

    meta, variables = read_packed(path)
    record = get_backbone(meta["backbone"])
    model = record.factory(record.default_size, None)
    assigned = 0
    for layer in model.layers:
        for index, variable in enumerate(layer.weights):
            value = variables.get(f"{layer.name}/{index}")
            if value is not None:
                variable.assign(value)
                assigned += 1
    if assigned != len(variables):
        refuse(f"{path}: {len(variables) - assigned} packed variables match no layer")
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(str(target))
    return {**meta, "variables": assigned}
