"""near_dup_detection: how well the scan's perceptual hash finds near copies.

3,264 distinct phantom slices (64, 96 or 128 px; the size of the Kaggle set) are written as
JPEG (quality 92) with 600 planted copies of the first 600 of them, 100 per transform:
JPEG re-encoded at quality 60-95, resized by +-10-20 %, brightness +-10 %, shifted by 1-3 px,
cropped by 2-5 % a side, re-saved as PNG. The folder is scanned as `tumor-search` scans a
dataset (one decode per image for its check and its hash). Positives: (original, copy)
pairs; negatives: all 5.3 M pairs of distinct phantoms. Prints the TPR and pairwise FPR at
the default threshold, the largest group found, per-transform TPR and the smallest
threshold meeting TPR >= 0.95 at FPR <= 1e-5.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.harness import note

N_DISTINCT = 3264
PER_TRANSFORM = 100
TRANSFORMS = ("jpeg", "resize", "brightness", "shift", "crop", "png")
CLASSES = ("glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor")


def _jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _copy(pixels: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """A near copy of `pixels` made by `kind`, and its file suffix."""
    img = Image.fromarray(pixels, "L")
    side = img.width
    sign = float(rng.choice([-1.0, 1.0]))
    if kind == "jpeg":
        return _jpeg(pixels, int(rng.integers(60, 96))), ".jpg"
    if kind == "resize":
        new = int(round(side * (1.0 + sign * rng.uniform(0.1, 0.2))))
        return _jpeg(np.asarray(img.resize((new, new), Image.Resampling.LANCZOS))), ".jpg"
    if kind == "brightness":
        gain = 1.0 + sign * rng.uniform(0.05, 0.1)
        return _jpeg(np.clip(pixels * gain, 0, 255).astype(np.uint8)), ".jpg"
    if kind == "shift":
        dx, dy = (int(rng.integers(1, 4)) * int(rng.choice([-1, 1])) for _ in range(2))
        moved = img.transform(img.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy))
        return _jpeg(np.asarray(moved)), ".jpg"
    if kind == "crop":
        c = max(1, int(round(side * rng.uniform(0.02, 0.05))))
        return _jpeg(np.asarray(img.crop((c, c, side - c, side - c)))), ".jpg"
    buffer = io.BytesIO()
    img.save(buffer, "PNG")
    return buffer.getvalue(), ".png"


def _write(root: Path) -> dict[str, tuple[str, str]]:
    """Write the originals and the copies; map each copy's path to (original, transform)."""
    from data.synth import phantom

    rng = np.random.default_rng(0)
    planted: dict[str, tuple[str, str]] = {}
    for i in range(N_DISTINCT):
        label = CLASSES[i % len(CLASSES)]
        size = (64, 96, 128)[i % 3]
        pixels = phantom(label, size, np.random.default_rng([11, i]))
        folder = root / "Training" / label
        folder.mkdir(parents=True, exist_ok=True)
        original = f"Training/{label}/p{i:04d}.jpg"
        (root / original).write_bytes(_jpeg(pixels))
        if i < PER_TRANSFORM * len(TRANSFORMS):
            kind = TRANSFORMS[i // PER_TRANSFORM]
            payload, suffix = _copy(pixels, kind, rng)
            copy = f"Training/{label}/c{i:04d}{suffix}"
            (root / copy).write_bytes(payload)
            planted[copy] = (original, kind)
    return planted


def _negatives(hashes: np.ndarray, bits: int, block: int = 256) -> np.ndarray:
    """Histogram of the Hamming distances of all pairs of rows (index: distance)."""
    from data.near_dup import distances

    counts = np.zeros(bits + 1, dtype=np.int64)
    for start in range(0, len(hashes), block):
        d = distances(hashes[start : start + block], hashes[start:])
        upper = np.triu(np.ones(d.shape, dtype=bool), k=1)
        counts += np.bincount(d[upper], minlength=bits + 1)
    return counts


def run(workdir: Path) -> float:  # long: one measurement, printed in steps
    from data.discovery import scan
    from data.near_dup import (
        DEFAULT_NEAR_THRESHOLD,
        HASH_BITS,
        MAX_NEAR_THRESHOLD,
        hash_array,
        near_groups,
    )

    root = workdir / "near-dup"
    planted = _write(root)
    start = time.perf_counter()
    dataset = scan(root)
    scan_s = time.perf_counter() - start
    by_path = {r.path: r.phash for r in dataset.images}
    originals = sorted(p for p in by_path if Path(p).name.startswith("p"))
    start = time.perf_counter()
    groups = near_groups([by_path[p] for p in originals], DEFAULT_NEAR_THRESHOLD)
    group_s = time.perf_counter() - start
    neg = _negatives(hash_array([by_path[p] for p in originals]), HASH_BITS)
    n_neg = int(neg.sum())
    pos = {
        kind: np.array(
            [
                int(np.bitwise_count(hash_array([by_path[c]]) ^ hash_array([by_path[o]])).sum())
                for c, (o, k) in planted.items()
                if k == kind
            ]
        )
        for kind in TRANSFORMS
    }
    every = np.concatenate(list(pos.values()))

    def rates(t: int) -> tuple[float, float]:
        return float((every <= t).mean()), float(neg[: t + 1].sum()) / n_neg

    everything = near_groups([r.phash for r in dataset.images], DEFAULT_NEAR_THRESHOLD)
    tpr, fpr = rates(DEFAULT_NEAR_THRESHOLD)
    largest = max((len(g) for g in everything), default=1)
    print(
        f"near_dup_detection: TPR {tpr:.3f} at pairwise FPR {fpr:.2g}, largest group {largest}",
        flush=True,
    )
    for kind in TRANSFORMS:
        d = pos[kind]
        note(
            f"  {kind:<10} TPR {(d <= DEFAULT_NEAR_THRESHOLD).mean():.3f} "
            f"(distance median {np.median(d):.0f}, max {d.max()})"
        )
    closest = int(np.nonzero(neg)[0][0])
    ok = [t for t in range(MAX_NEAR_THRESHOLD + 1) if rates(t)[0] >= 0.95 and rates(t)[1] <= 1e-5]
    note(
        f"  threshold {DEFAULT_NEAR_THRESHOLD} of {HASH_BITS} bits; closest distinct phantoms "
        f"{closest} bits apart; thresholds meeting TPR >= 0.95 at FPR <= 1e-5: "
        + (f"{ok[0]}-{ok[-1]}" if ok else "none")
    )
    for t in range(16, MAX_NEAR_THRESHOLD + 1, 4):
        note(f"  t={t:<3} TPR {rates(t)[0]:.3f} FPR {rates(t)[1]:.2g}")
    note(
        f"  scan {len(dataset.images)} images {scan_s:.1f}s ({scan_s / len(dataset.images) * 1e3:.2f}"
        f" ms/image, decode + sha256 + hash); grouping {len(originals)} hashes "
        f"({n_neg / 1e6:.1f} M pairs) {group_s:.2f}s; {len(groups)} false groups among them"
    )
    return tpr
