"""train-best's refit: the exported configuration trained on train+val together.

When best.json carries a finalize result, the configuration and its epoch count were chosen
by cross-validation; the validation split then has no choosing left to do, and the final
model trains on it too, for exactly the epochs finalize chose, then is tested once. With no
validation data there is no score to choose among seeds by: the first seed's model is kept.
"""

from __future__ import annotations

from typing import Any

from common.progress import log
from search.errors import InputError
from search.training.batching import predict


def finalize_epochs(payload: dict[str, Any]) -> int | None:
    """The epoch count finalize chose for the exported trial; None without a finalize result."""
    final = payload.get("finalize")
    if not isinstance(final, dict) or final.get("winner") != payload.get("trial"):
        return None
    epochs = final.get("epochs")
    return epochs if isinstance(epochs, int) and epochs >= 1 else None


def wants_refit(payload: dict[str, Any], refit: bool | None, source: str) -> bool:
    """Whether to refit: as asked, else when the export carries a finalize result.

    Raises:
        InputError: --refit asked of an export without a finalize result.
    """
    has_result = finalize_epochs(payload) is not None
    if refit is None:
        return has_result
    if refit and not has_result:
        raise InputError(
            f"--refit needs a finalize result and {source} has none: run `tumor-search finalize "
            f"--study {payload.get('study')}`, export again, or leave out --refit"
        )
    return refit


def refit_seeds(
    config: Any, trial_config: Any, train_val: Any, test: Any, seeds: int, payload: dict[str, Any]
) -> tuple[list[dict[str, Any]], Any, int]:
    """Refit once per seed on train+val for finalize's epoch count, test each model once;
    the runs, and the first seed's model (and its index 0)."""
    from search.results.evaluation import classification_metrics
    from search.training.callbacks import EpochRecorder
    from search.training.refit import refit  # imports Keras: only once input is good

    epochs = finalize_epochs(payload)
    assert epochs is not None
    classes = list(train_val.classes)
    runs: list[dict[str, Any]] = []
    kept = None
    for i in range(seeds):
        seed = config.training.seed + i
        recorder = EpochRecorder(f"[refit seed {seed}]", epochs)
        result = refit(trial_config, config, train_val, recorder, epochs, seed=seed)
        probs = predict(result.model, test.x, trial_config.batch_size)
        metrics = classification_metrics(test.y, probs.argmax(axis=1), classes)
        runs.append(
            {"seed": seed, "epochs": result.epochs_run, "images": result.images, "test": metrics}
        )
        log(
            f"[refit seed {seed}] {result.epochs_run} epochs on {result.images} train+val images, "
            f"test accuracy {metrics['accuracy']:.4f}"
        )
        if kept is None:
            kept = result.model
    return runs, kept, 0


def training_record(
    payload: dict[str, Any], config: Any, train_val: Any, refit: bool, seeds: int
) -> dict[str, Any]:
    """What metrics.json says about how the model was chosen and trained."""
    n_train, n_val = len(train_val.y_train), len(train_val.y_val)
    chosen_by = payload.get("selected_by") or (
        f"best {payload.get('metric', config.objective.metric)} on the validation split"
    )
    record: dict[str, Any] = {"trial_selected_by": chosen_by, "refit": refit}
    if not refit:
        record["trained_on"] = {
            "splits": ["train"],
            "images": n_train,
            "validation_images": n_val,
            "epochs": f"up to {config.training.epochs}, best validation epoch kept",
        }
        return record
    final = payload["finalize"]
    record["trained_on"] = {
        "splits": ["train", "val"],
        "images": n_train + n_val,
        "validation_images": 0,
        "epochs": finalize_epochs(payload),
        "epochs_rule": final.get("epochs_rule"),
    }
    record["selected_by"] = (
        "the first seed: a refit has no validation data to choose by"
        if seeds > 1
        else "the only seed (refit on train+val)"
    )
    return record
