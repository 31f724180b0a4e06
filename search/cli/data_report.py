"""The duplicates part of `tumor-search data check`: exact and near-duplicate groups by the
splits their images sit in, label conflicts and the test images left out."""

from __future__ import annotations

from data.dedup import group_max_distance
from data.discovery import Dataset
from data.near_dup import HASH_BITS
from data.split import SPLITS, SplitManifest

SHOWN = 10  # lines of each list printed as text; --json has them all


def _where(splits: set[str]) -> str:
    """``within train``, ``train-test``, ``train-val-test``, ... for a group's splits."""
    ordered = [s for s in SPLITS if s in splits]
    return f"within {ordered[0]}" if len(ordered) == 1 else "-".join(ordered)


def duplicate_report(manifest: SplitManifest, dataset: Dataset) -> dict:
    """The `data check --json` keys about duplicates (beside ``duplicates``)."""
    records = {r.path: r for r in dataset.images}
    split_of = {e.path: e.split for e in manifest.entries}
    dropped = {d.path for d in manifest.dropped}
    exact = {tuple(g) for g in manifest.exact_duplicates}
    conflicts = {tuple(g) for g in manifest.label_conflicts}
    groups = []
    for group in manifest.duplicates:
        members = [
            {
                "path": p,
                "label": records[p].label,
                "split": "dropped" if p in dropped else split_of.get(p, "none"),
            }
            for p in group
        ]
        # A dropped image came from Testing: it counts as test, to show what was averted.
        where = _where({"test" if m["split"] == "dropped" else m["split"] for m in members})
        groups.append(
            {
                "kind": "exact" if tuple(group) in exact else "near",
                "splits": where,
                "max_distance": group_max_distance([records[p] for p in group]),
                "label_conflict": tuple(group) in conflicts,
                "members": members,
            }
        )
    by_splits: dict[str, int] = {}
    for g in groups:
        by_splits[g["splits"]] = by_splits.get(g["splits"], 0) + 1
    return {
        "duplicate_groups": groups,
        "duplicates_by_splits": dict(sorted(by_splits.items())),
        "label_conflicts": [list(g) for g in manifest.label_conflicts],
    }


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _member(m: dict) -> str:
    return f"{m['path']} [{m['label']}, {m['split']}]"


def _more(items: list, what: str) -> None:
    if len(items) > SHOWN:
        print(f"  ... and {len(items) - SHOWN} more {what} (see --json)")


def print_duplicates(summary: dict) -> None:
    """The text lines about duplicates, label conflicts and dropped test images."""
    groups = summary["duplicate_groups"]
    policy = summary["split_policy"]
    n_exact = sum(g["kind"] == "exact" for g in groups)
    near = f"within {policy['near_threshold']} of {HASH_BITS} bits"
    if not groups:
        print("duplicates:  none" + (f" (near: {near})" if policy["dedup"] == "near" else ""))
    else:
        print(
            f"duplicates:  {_n(len(groups), 'group')} ({n_exact} exact, {len(groups) - n_exact} "
            f"near)" + (f"; near: {near}" if policy["dedup"] == "near" else "")
        )
    for where in sorted({g["splits"] for g in groups}):
        these = [g for g in groups if g["splits"] == where]
        print(f"  {where}: {_n(len(these), 'group')}")
        for g in these[:SHOWN]:
            sign = " = " if g["kind"] == "exact" else " ~ "
            detail = "" if g["kind"] == "exact" else f" (distance <= {g['max_distance']})"
            print(f"    {g['kind']:<5}  {sign.join(_member(m) for m in g['members'])}{detail}")
        _more(these, "groups")
    conflicts = summary["label_conflicts"]
    if conflicts:
        kept = (
            "kept out of test"
            if policy["dedup"] == "near"
            else "only dedup near keeps them out of test"
        )
        print(f"label conflicts: {_n(len(conflicts), 'group')} with several classes ({kept})")
        for group in conflicts[:SHOWN]:
            print(f"  {' ~ '.join(group)}")
        _more(conflicts, "conflicts")
    dropped = summary["dropped_test_duplicates"]
    if dropped:
        print(
            f"dropped:     {_n(len(dropped), 'test image')} copying a training image (or an "
            "image of another class); left out of test"
        )
        for d in dropped[:SHOWN]:
            how = "exact" if d["kind"] == "exact" else f"{d['kind']}, distance {d['distance']}"
            print(f"  {d['path']} {'=' if d['kind'] == 'exact' else '~'} {d['copy_of']} ({how})")
        _more(dropped, "images")
