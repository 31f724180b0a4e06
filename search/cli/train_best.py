"""`tumor-search train-best`: retrain the exported configuration and test it once."""

from __future__ import annotations

import argparse
import os

from search.cli.args import (
    add_storage,
    positive_float,
    positive_int,
)


def cmd_train_best(args: argparse.Namespace) -> int:
    from search.results.train_best import train_best

    summary = train_best(
        args.config,
        args.data,
        args.out,
        seeds=args.seeds,
        storage_url=args.storage,
        record=not args.no_record,
        refit=args.refit,
        formats=args.format,
        deadline=args.started_at + args.timeout if args.timeout is not None else None,
    )
    print(f"trial {summary['trial']} chosen by: {summary['trial_selected_by']}")
    trained = summary["trained_on"]
    if summary["refit"]:
        print(
            f"refit on train+val: {trained['images']} images, {trained['epochs']} epochs "
            f"({trained['epochs_rule']}), no validation split"
        )
    else:
        print(
            f"trained on the train split ({trained['images']} images), validation "
            f"({trained['validation_images']} images) chose the best epoch"
        )
    test = summary["test"]
    print(
        f"test accuracy {test['accuracy']:.4f} on {summary['test_images']} held-out images", end=""
    )
    if len(summary["seeds"]) > 1:
        print(
            f" (mean {summary['test_accuracy_mean']:.4f} ± {summary['test_accuracy_std']:.4f} over {len(summary['seeds'])} seeds)"
        )
    else:
        print()
    for name, m in test["per_class"].items():
        print(
            f"  {name:<14} precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  ({m['support']} images)"
        )
    written = [os.path.join(args.out, f["path"]) for f in summary["formats"].values()]
    print(f"wrote {', '.join(written)} and {os.path.join(args.out, 'metrics.json')}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "train-best",
        parents=[common],
        help="retrain the exported configuration and test it once",
        description="Retrain the configuration in best.json, evaluate once on the held-out "
        "test split, write model.keras and metrics.json, and record the result on the study. "
        "When the config sets training.refit_epochs, or best.json carries a finalize result, "
        "train on train+val together for that many epochs, or the count cross-validation "
        "chose (--refit, the default then); else on the train split, with validation for "
        "early stopping (--no-refit).",
    )
    p.add_argument("--config", required=True, metavar="best.json", help="file written by export")
    p.add_argument("--data", metavar="DIR", help="dataset folder (default: the config's data.path)")
    p.add_argument(
        "--out", default="runs/best", metavar="DIR", help="output folder (default runs/best)"
    )
    p.add_argument(
        "--seeds",
        type=positive_int,
        default=1,
        metavar="N",
        help="train N times with different seeds",
    )
    refit = p.add_mutually_exclusive_group()
    refit.add_argument(
        "--refit",
        dest="refit",
        action="store_true",
        default=None,
        help="train on train+val for training.refit_epochs or finalize's epoch count (default "
        "when either is there; an error without both)",
    )
    refit.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="train on the train split with validation for early stopping",
    )
    p.add_argument(
        "--format",
        default="keras",
        metavar="LIST",
        help="comma-separated formats to write: keras (always), savedmodel, onnx (runs in "
        "onnxruntime without TensorFlow: tumor-search predict or tumor-predict), litert; each "
        "is loaded back in its runtime and must give the Keras model's probabilities within "
        "1e-4 (default keras). All but keras need the TensorFlow backend and "
        "pip install 'tumor-search[export]'",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="finish within about S seconds of the command's start: a refit trains no more "
        "epochs than fit, by the pace finalize measured on the winner's folds, else its "
        "trial's (default: the epochs asked, however long they take)",
    )
    add_storage(p)
    p.add_argument("--no-record", action="store_true", help="do not write the result to the study")
    p.set_defaults(handler=cmd_train_best)
