"""`tumor-search predict`: classify image files with a saved model (.keras or .onnx)."""

from __future__ import annotations

import argparse
import sys


def cmd_predict(args: argparse.Namespace) -> int:
    from tumor_predict.cli import write_predictions

    from search.results.predict import predict_paths

    medical = None
    if args.config is not None:
        from search.config import load_config

        medical = load_config(args.config).data.medical()
    predictions = predict_paths(args.model, args.paths, medical=medical)
    write_predictions(predictions, args.json, sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="classify image files with a saved model",
        description=(
            "Print each image's predicted class and class probabilities. A .keras model runs "
            "in Keras; an .onnx model (train-best --format onnx) runs in onnxruntime without "
            "TensorFlow, as the tumor-predict command of tumor-search-predict does."
        ),
    )
    p.add_argument(
        "--model",
        required=True,
        metavar="FILE.keras|FILE.onnx",
        help="model written by train-best",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="image files or folders; with a .keras model also DICOM files (.dcm) and NIfTI "
        "volumes (.nii, .nii.gz), a prediction per slice (FILE#frame=K, FILE#axial=K)",
    )
    p.add_argument(
        "--config",
        metavar="NAME|FILE",
        help="read DICOM and NIfTI slices as this study config does (its data section: "
        "dicom_window, volume_axis, volume_range, volume_min_intensity); default settings "
        "otherwise",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(handler=cmd_predict, uses_optuna=False)
