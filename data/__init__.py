"""Datasets: discovery of the known layouts, splitting, decoding, caches and phantom data."""

from __future__ import annotations

from data.decode import SplitArrays, decode_image, load_split
from data.discovery import CANONICAL_CLASSES, Dataset, ImageRecord, scan
from data.errors import DataError
from data.split import SPLITS, ManifestEntry, SplitManifest, SplitPolicy, make_manifest
from data.synth import synthesize

__all__ = [
    "CANONICAL_CLASSES",
    "SPLITS",
    "DataError",
    "Dataset",
    "ImageRecord",
    "ManifestEntry",
    "SplitArrays",
    "SplitManifest",
    "SplitPolicy",
    "decode_image",
    "load_split",
    "make_manifest",
    "scan",
    "synthesize",
]
