"""Near-duplicate images: a perceptual hash per image and groups of images whose hashes
differ in few bits.

The hash is imagehash's pHash with a 16x16 DCT (256 bits) of the image after a moment
normalisation: the intensity centroid and spread of the foreground (the head) set a square
window that is resampled to 64x64 px. Re-encoded, resized, brightened, shifted and lightly
cropped copies of a slice then hash within a few bits of each other, while distinct slices,
which look alike in a 64-bit hash (a bright ellipse on black), stay far apart.
``python bench/run.py --only near_dup`` measures it; the default threshold comes from there.

Grouping is transitive (union-find): if a ~ b and b ~ c, a, b and c form one group. Exact
copies (same bytes) have the same hash, so they are at distance 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
from PIL import Image, ImageOps

HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
# The largest threshold allowed: a quarter of the bits; beyond it distinct slices match.
MAX_NEAR_THRESHOLD = HASH_BITS // 4
# Measured by bench/near_dup.py (3,264 distinct phantoms at 64-128 px, 600 planted copies,
# 5.3 M distinct pairs): at 24 bits TPR 0.998 (jpeg q60-95, resize +-10-20 %, brightness
# +-10 %, 1-3 px shifts and PNG re-saves 1.000; 2-5 % crops 0.990, one crop at 34 bits) at
# pairwise FPR 0. Thresholds 16-43 meet TPR >= 0.95 at FPR <= 1e-5 (16: TPR 0.962, 28: 0.998);
# 24 keeps a margin below the closest distinct phantoms (32 bits apart here, 30 among 800
# phantoms at 256 px; 32 gives FPR 3.8e-7, 44 1.5e-5). Plain imagehash hashes of the same
# images do worse: 64-bit phash TPR 0.67 at its best threshold with FPR <= 1e-5, 256-bit
# phash without the window 0.78; 64-bit dhash and whash give many distinct phantoms equal
# hashes (FPR above 1e-5 at distance 0).
DEFAULT_NEAR_THRESHOLD = 24
_WINDOW = 64  # side of the normalised window the hash is computed from
_SPREAD = 2.2  # half-width of that window, in standard deviations of the foreground
_WORDS = HASH_BITS // 64


def _normalised(image: Image.Image) -> Image.Image:
    """The grayscale image cropped to a square around its foreground, at `_WINDOW` px."""
    gray = image.convert("L")
    factor = min(gray.size) // _WINDOW
    if factor > 1:  # PNG/BMP: as JPEG's draft mode does, work at 64-128 px
        gray = gray.reduce(factor)
    a = np.asarray(gray, dtype=np.float32)
    weight = np.clip(a - 0.15 * float(a.max()), 0.0, None)
    total = float(weight.sum())
    if total <= 0.0:  # a blank image: no foreground to centre on
        return gray.resize((_WINDOW, _WINDOW), Image.Resampling.LANCZOS)
    ys, xs = np.indices(a.shape, dtype=np.float32)
    cx = float((xs * weight).sum()) / total
    cy = float((ys * weight).sum()) / total
    var_x = float(((xs - cx) ** 2 * weight).sum()) / total
    var_y = float(((ys - cy) ** 2 * weight).sum()) / total
    r = max(_SPREAD * float(np.sqrt(max(var_x, var_y))), 1.0)
    pad = int(np.ceil(r)) + 1  # the window may reach past the border: pad with black
    padded = ImageOps.expand(gray, pad, fill=0)
    box = (cx - r + pad, cy - r + pad, cx + r + pad, cy + r + pad)
    return padded.resize((_WINDOW, _WINDOW), Image.Resampling.LANCZOS, box=box)


def perceptual_hash(image: Image.Image) -> str:
    """The image's perceptual hash as a hex string of `HASH_BITS` bits."""
    return str(imagehash.phash(_normalised(image), hash_size=HASH_SIZE))


def hash_array(hashes: Sequence[str]) -> np.ndarray:
    """Hex hashes as an ``(n, HASH_BITS // 64)`` uint64 array (for XOR and popcount)."""
    out = np.zeros((len(hashes), _WORDS), dtype=np.uint64)
    for i, h in enumerate(hashes):
        raw = bytes.fromhex(h)
        if len(raw) * 8 != HASH_BITS:
            raise ValueError(f"hash of {len(raw) * 8} bits, expected {HASH_BITS}: {h!r}")
        out[i] = np.frombuffer(raw, dtype=">u8")
    return out


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances between every row of `a` and every row of `b` (uint64 words)."""
    x = np.bitwise_xor(a[:, None, :], b[None, :, :])
    return np.bitwise_count(x).sum(axis=-1, dtype=np.int32)


def near_pairs(
    hashes: np.ndarray, threshold: int, block: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``i < j`` whose hashes differ in at most `threshold` bits, and their distances.

    Blocks of `block` rows against the rows after them: memory stays at
    ``block * n * HASH_BITS / 8`` bytes.
    """
    n = len(hashes)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    found_d: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        d = distances(hashes[start:stop], hashes[start:])
        rows, cols = np.nonzero(d <= threshold)
        keep = cols > rows  # columns are offset by `start`: j = start + col, i = start + row
        rows, cols = rows[keep], cols[keep]
        found_i.append(rows + start)
        found_j.append(cols + start)
        found_d.append(d[rows, cols])
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty.astype(np.int32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def union_find(n: int, pairs_i: np.ndarray, pairs_j: np.ndarray) -> list[list[int]]:
    """Connected components of the graph on ``0..n-1`` with edges ``(pairs_i, pairs_j)``
    (`scipy.sparse.csgraph.connected_components`): the groups of more than one member, each
    sorted, ordered by their first member."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return []
    edges = np.ones(len(pairs_i), dtype=np.int8)
    graph = coo_matrix((edges, (np.asarray(pairs_i), np.asarray(pairs_j))), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")  # members ascending within each component
    cut = np.flatnonzero(np.diff(labels[order])) + 1
    groups = [g.tolist() for g in np.split(order, cut) if len(g) > 1]
    return sorted(groups, key=lambda g: g[0])


def near_groups(hashes: Sequence[str], threshold: int) -> list[list[int]]:
    """Indices of `hashes` grouped transitively by Hamming distance <= `threshold`.

    Empty hashes (unknown) never match anything; equal non-empty hashes are at distance 0.
    """
    known = [i for i, h in enumerate(hashes) if h]
    array = hash_array([hashes[i] for i in known])
    pi, pj, _ = near_pairs(array, threshold)
    return [[known[k] for k in g] for g in union_find(len(known), pi, pj)]
