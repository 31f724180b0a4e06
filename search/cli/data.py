"""`tumor-search data synth` and `tumor-search data check`."""

from __future__ import annotations

import argparse
import json
import sys

from data.discovery import Dataset, scan
from data.groups import dataset_groups, group_warnings
from data.near_dup import DEFAULT_NEAR_THRESHOLD, HASH_BITS, MAX_NEAR_THRESHOLD
from data.split import DEDUP_POLICIES, SplitManifest, SplitPolicy, make_manifest
from data.synth import synthesize
from search.cli.data_report import duplicate_report, print_duplicates
from search.errors import InputError


def resolve_policy(name: str, has_official_test: bool) -> str:
    """``auto`` is ``official`` when the dataset has its own test folder, else ``pooled``."""
    if name == "auto":
        return "official" if has_official_test else "pooled"
    return name


def check_summary(manifest: SplitManifest, dataset: Dataset) -> dict:
    """The `data check --json` object."""
    counts = manifest.counts()
    per_class = dict.fromkeys(manifest.classes, 0)
    for e in manifest.entries:
        per_class[e.label] += 1
    return {
        "root": str(dataset.root),
        "layout": manifest.layout,
        "classes": list(manifest.classes),
        "images": len(manifest.entries),
        "per_class": per_class,
        "split_policy": {
            "policy": manifest.policy.policy,
            "seed": manifest.policy.seed,
            "val_fraction": manifest.policy.val_fraction,
            "test_fraction": manifest.policy.test_fraction,
            "dedup": manifest.policy.dedup,
            "near_threshold": manifest.policy.near_threshold,
        },
        "splits": counts,
        "unreadable": list(manifest.unreadable),
        "ignored": list(dataset.ignored),
        "skipped": [{"path": path, "reason": reason} for path, reason in dataset.skipped],
        "duplicates": [list(g) for g in manifest.duplicates],
        "cross_split_duplicates": manifest.cross_split_duplicates(),
        "dropped_test_duplicates": [
            {"path": d.path, "copy_of": d.copy_of, "kind": d.kind, "distance": d.distance}
            for d in manifest.dropped
        ],
        **duplicate_report(manifest, dataset),
        "test_balance_warnings": manifest.test_balance_warnings(),
        "groups": manifest.group_summary(),
        "group_warnings": [],
        "fingerprint": manifest.fingerprint,
    }


def _print_text(summary: dict) -> None:
    classes = summary["classes"]
    policy = summary["split_policy"]
    print(f"dataset:     {summary['root']}")
    print(f"layout:      {summary['layout']}")
    print(f"classes:     {', '.join(classes)}")
    print(
        f"images:      {summary['images']} readable, {len(summary['unreadable'])} unreadable, "
        f"{len(summary['ignored'])} non-image files ignored"
        + (f", {len(summary['skipped'])} files without an image" if summary["skipped"] else "")
    )
    print(f"split:       {_policy_text(policy)}")
    width = max(len(c) for c in classes + ["class"])
    print(f"  {'class':<{width}}  {'train':>6} {'val':>6} {'test':>6} {'total':>6}")
    splits = summary["splits"]
    for c in classes:
        row = [splits[s][c] for s in ("train", "val", "test")]
        print(f"  {c:<{width}}  {row[0]:>6} {row[1]:>6} {row[2]:>6} {sum(row):>6}")
    totals = [sum(splits[s].values()) for s in ("train", "val", "test")]
    print(f"  {'all':<{width}}  {totals[0]:>6} {totals[1]:>6} {totals[2]:>6} {sum(totals):>6}")
    for item in summary["skipped"][:20]:
        print(f"skipped:     {item['path']}: {item['reason']}")
    for path in summary["unreadable"][:20]:
        print(f"unreadable:  {path}")
    if len(summary["unreadable"]) > 20:
        print(f"unreadable:  ... and {len(summary['unreadable']) - 20} more (see --json)")
    print_duplicates(summary)
    for line in summary["group_warnings"]:
        print(line.replace("warning: ", "warning:     ", 1))
    groups = summary["groups"]
    if groups["count"]:
        per_split = ", ".join(f"{n} in {split}" for split, n in groups["per_split"].items())
        print(
            f"groups:      {groups['count']} patient groups ({per_split}), the largest "
            f"{groups['largest']} images; {groups['spanning_splits']} span two splits"
        )
    leaks = summary["cross_split_duplicates"]
    if leaks:
        print(f"warning:     {len(leaks)} duplicate groups span two splits (train/test leakage)")
    for line in summary["test_balance_warnings"]:
        print(line.replace("warning: ", "warning:     ", 1))
    print(f"fingerprint: {summary['fingerprint']}")
    if summary.get("config"):
        print(f"             the fingerprint a study made from {summary['config']} records")
    else:
        print(
            "             for this split only; a study's fingerprint depends on its config's "
            "split settings (check it with --config)"
        )


def _policy_text(policy: dict) -> str:
    extra = "" if policy["policy"] == "official" else f", test {policy['test_fraction']}"
    near = f" within {policy['near_threshold']} bits" if policy["dedup"] == "near" else ""
    return (
        f"{policy['policy']} (seed {policy['seed']}, val {policy['val_fraction']}{extra}, "
        f"duplicates {policy['dedup']}{near})"
    )


def _refuse_flags_with_config(args: argparse.Namespace) -> None:
    """A split flag beside --config (which sets the split) is bad input."""
    given = [
        flag
        for flag, value in (
            ("--split", args.split),
            ("--seed", args.seed),
            ("--val-fraction", args.val_fraction),
            ("--test-fraction", args.test_fraction),
            ("--dedup", args.dedup),
            ("--near-threshold", args.near_threshold),
            ("--groups", args.groups),
            ("--group-pattern", args.group_pattern),
        )
        if value is not None
    ]
    if given:
        raise InputError(f"{given[0]} cannot be combined with --config (the config sets it)")


def _split_settings(
    args: argparse.Namespace, has_official_test: bool
) -> tuple[SplitPolicy, str | None, str | None]:
    """The split `data check` shows and its patient groups (a CSV file, a pattern): the
    config's (as a study made from it splits), else the flags' (defaults for the rest)."""
    if args.config is None:
        threshold = DEFAULT_NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold
        if not 0 <= threshold <= MAX_NEAR_THRESHOLD:
            raise InputError(
                f"--near-threshold must be between 0 and {MAX_NEAR_THRESHOLD} bits (of "
                f"{HASH_BITS}), got {threshold}"
            )
        policy = SplitPolicy(
            policy=resolve_policy(args.split or "auto", has_official_test),
            val_fraction=0.15 if args.val_fraction is None else args.val_fraction,
            test_fraction=0.15 if args.test_fraction is None else args.test_fraction,
            seed=42 if args.seed is None else args.seed,
            dedup=args.dedup or "near",
            near_threshold=threshold,
        )
        return policy, args.groups, args.group_pattern
    from search.config import load_config

    d = load_config(args.config).data
    policy = SplitPolicy(
        d.split, d.val_fraction, d.test_fraction, d.seed, d.dedup, d.near_threshold
    )
    return policy, d.groups, d.group_pattern


def cmd_check(args: argparse.Namespace) -> int:
    medical = None
    if args.config is not None:
        _refuse_flags_with_config(args)
        from search.config import load_config

        medical = load_config(args.config).data.medical()
    dataset = scan(args.dir, medical=medical)
    policy, groups_file, pattern = _split_settings(args, dataset.has_official_test)
    groups = dataset_groups(dataset, groups_file, pattern)
    manifest = make_manifest(dataset, policy, groups)
    summary = check_summary(manifest, dataset)
    if groups_file is None and pattern is None:
        summary["group_warnings"] = group_warnings(dataset)
    summary["config"] = args.config
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(summary)
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    result = synthesize(
        args.out,
        per_class=args.per_class,
        size=args.size,
        seed=args.seed,
        test_fraction=args.test_fraction,
    )
    print(
        f"wrote {result.train + result.test} phantom images ({result.train} Training, "
        f"{result.test} Testing) at {result.size}px to {result.out}"
    )
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    data = sub.add_parser(
        "data",
        help="make phantom data or check a dataset folder",
        description="Make phantom MRI data, or check a dataset folder and show its split.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="{synth,check}", required=True)
    _register_synth(data_sub, common)
    _register_check(data_sub, common)


def _register_synth(data_sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    synth = data_sub.add_parser(
        "synth",
        parents=[common],
        help="write phantom MRI slices in the Kaggle layout",
        description=(
            "Write phantom axial MRI slices (glioma, meningioma, pituitary tumour, none) as "
            "JPEG files in the Kaggle 'Brain Tumor Classification (MRI)' layout "
            "(Training/ and Testing/). The same seed writes byte-identical files."
        ),
    )
    synth.add_argument("--out", required=True, help="folder to write (new or empty)")
    synth.add_argument(
        "--per-class", type=int, default=200, help="images per class in total (default 200)"
    )
    synth.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--test-fraction",
        type=float,
        default=0.12,
        help="share of each class written under Testing/ (default 0.12)",
    )
    synth.set_defaults(handler=cmd_synth)


def _register_check(data_sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    check = data_sub.add_parser(
        "check",
        parents=[common],
        help="summarise a dataset: layout, classes, split, unreadable files, duplicates",
        description=(
            "Find the dataset's layout and classes, verify every image, split it and print "
            "counts per split and class, unreadable files, exact and near-duplicate groups "
            "(same bytes; perceptual hashes within --near-threshold bits) by the splits "
            "they sit in, label conflicts (a group that spans classes, kept out of test), the "
            "test images left out because they copy a training image, and the split's "
            "fingerprint. "
            "With --config the split is the config's, and the fingerprint is the one a study "
            "made from that config records (the one its workers compare)."
        ),
    )
    check.add_argument("dir", help="dataset folder")
    check.add_argument(
        "--config",
        metavar="NAME|FILE",
        help="split as this study config does: demo, demo-pareto, kaggle or a YAML file",
    )
    check.add_argument(
        "--split",
        choices=("auto", "official", "pooled"),
        help="split policy (default auto: official when the dataset has Testing/, else pooled)",
    )
    check.add_argument("--seed", type=int, help="split seed (default 42)")
    check.add_argument("--val-fraction", type=float, help="validation share (default 0.15)")
    check.add_argument("--test-fraction", type=float, help="test share under pooled (default 0.15)")
    check.add_argument(
        "--dedup",
        choices=DEDUP_POLICIES,
        help="duplicate policy (default near: exact and near copies stay in one split; "
        "exact: exact copies only; off: no grouping)",
    )
    check.add_argument(
        "--near-threshold",
        type=int,
        metavar="BITS",
        help=f"largest Hamming distance (of {HASH_BITS} bits) between near copies under "
        f"--dedup near (default {DEFAULT_NEAR_THRESHOLD}, at most {MAX_NEAR_THRESHOLD})",
    )
    check.add_argument(
        "--groups",
        metavar="FILE.csv",
        help="patient groups: a CSV with columns path and group (relative: in the dataset "
        "folder); a group's images stay in one split",
    )
    check.add_argument(
        "--group-pattern",
        metavar="REGEX",
        help="patient groups: the first capture group of REGEX in each image's relative path",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=cmd_check)
