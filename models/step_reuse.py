"""Trials of one architecture train one kept model, whose traced steps serve them all
(TensorFlow).

The first `fit` of a Keras model on TensorFlow traces its train and test steps into graphs:
on 2 CPU cores 6-7 s of a MobileNetV3Small's first epoch at 64 px, 0.9 s of small_cnn's,
tens of seconds for larger backbones, in every trial. Trials that differ only in values the
steps read from variables (dropout rate, learning rate, weight decay, Adam or AdamW; label
smoothing is in the targets) trace the same graphs: under JAX the persistent compilation
cache shares them (`tests/search/test_compile_sharing.py`); TensorFlow has no such cache.

So a worker keeps its last few compiled models (`StepPool`, `worker.kept_models`). A trial
still builds its own model, seeded as always; when a kept model has the same architecture,
it takes over the new model's whole state (weights, batch-norm statistics, seed generators'
states, optimizer slots, step count, learning rate and decay), copied variable by variable,
and trains in its place: it starts exactly where the new model would, and its steps are
traced already.

A caller that shares (`fit(..., reuse_steps=True)`: trials and finalize's folds) promises to
hold no model of an earlier fit once it fits again; `train-best`, which keeps and saves its
models, never shares.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from models.trial_config import TrialConfig

# Models kept per process unless the config says otherwise (`worker.kept_models`): over
# a 300 s demo search 32 of 42 trials found their architecture among the last 3 (17 among
# the last 1, 25 among the last 2, 33 among the last 4).
KEPT_MODELS = 3


def traced_fields(config: TrialConfig) -> TrialConfig:
    """`config` with the values its traced steps do not depend on set to one value each:
    those in variables (`models.layers.RateDropout`, `models.layers.DecayAdam`) or in the
    targets (label smoothing), and, for a head without hidden layers, the hidden layers'
    width, activation and batch normalisation (`models.head.build_head` makes none)."""
    config = dataclasses.replace(
        config,
        dropout=0.0,
        learning_rate=1.0,
        optimizer="adam",
        weight_decay=0.0,
        label_smoothing=0.0,
    )
    if config.head_depth == 0:
        config = dataclasses.replace(
            config, head_width=1, head_activation="relu", head_batchnorm=False
        )
    return config


def _layout(model: Any) -> tuple[Any, ...]:
    """What must match for one model to take over another's state: layer types, variables'
    shapes and dtypes (model and optimizer), and which of them train."""

    def shapes(variables: Any) -> tuple[Any, ...]:
        return tuple((tuple(v.shape), str(v.dtype)) for v in variables)

    optimizer = model.optimizer
    return (
        tuple(type(layer).__name__ for layer in model._flatten_layers()),
        shapes(model.variables),
        shapes(model.trainable_variables),
        type(optimizer).__name__,
        shapes(optimizer.variables) if optimizer is not None else (),
    )


class StepPool:
    """The last `capacity` compiled models of this process, by architecture (only
    TensorFlow's: `search.training.fit` asks for no other)."""

    def __init__(self, capacity: int = KEPT_MODELS) -> None:
        self.capacity = capacity
        self._models: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = 0
        self.let_go = False  # a kept model was dropped since the last `collect`

    def adopt(self, fresh: Any, key: Hashable) -> Any | None:
        """A kept model of `key`'s architecture holding `fresh`'s state, or None (then
        `fresh`, its training state built, is kept under `key` instead: `keep`)."""
        if self.capacity <= 0:
            return None
        kept = self._models.get(key)
        if kept is None:
            return None
        if fresh.optimizer is not None and not fresh.optimizer.built:
            fresh.optimizer.build(fresh.trainable_variables)
        if _layout(kept) != _layout(fresh):  # never expected: the key missed something
            del self._models[key]
            self.let_go = True
            return None
        for target, source in zip(kept.variables, fresh.variables, strict=True):
            target.assign(source.value)
        if fresh.optimizer is not None:
            pairs = zip(kept.optimizer.variables, fresh.optimizer.variables, strict=True)
            for target, source in pairs:
                target.assign(source.value)
        kept.reset_metrics()
        self._models.move_to_end(key)
        self.hits += 1
        return kept

    def keep(self, model: Any, key: Hashable) -> None:
        """Keep `model` (compiled, its training state built) for later fits of `key`."""
        if self.capacity <= 0:
            return
        self._models[key] = model
        self._models.move_to_end(key)
        self._trim()

    def resize(self, capacity: int) -> None:
        """Keep at most `capacity` models from now on (the least recently used go)."""
        self.capacity = capacity
        self._trim()

    def _trim(self) -> None:
        while len(self._models) > max(self.capacity, 0):
            self._models.popitem(last=False)
            self.let_go = True

    def let_go_largest(self) -> bool:
        """Drop the kept model with the most variables (its graphs the largest, likely);
        False when none is kept."""
        if not self._models:
            return False
        key = max(self._models, key=lambda k: len(self._models[k].variables))
        del self._models[key]
        self.let_go = True
        return True

    def clear(self) -> None:
        self.let_go = self.let_go or bool(self._models)
        self._models.clear()

    def collect(self, free_dropped: bool = True) -> None:
        """Python's garbage collection between fits, blind to what the kept models hold.

        A kept MobileNetV3Small's traced graphs are about 110k Python objects, which every
        full collection would scan again: 0.07-0.1 s each, in every trial. So what survives
        a collection while models are kept moves out of the collector's sight (`gc.freeze`),
        and comes back into it (`gc.unfreeze`) once a kept model has been dropped, so that
        the collection frees its graphs.

        That collection scans everything the process holds (the 400k objects of TensorFlow
        and Keras themselves included): 0.4-1.2 s. With `free_dropped` False it waits for
        a later `collect` (a worker frees them once the trial's result is told:
        `search.runtime.worker._memory_over_limit`).
        """
        import gc

        for model in self._models.values():
            # A fit that ended early (a pruned trial) leaves its validation iterator, a copy
            # of the validation images, on the model; the next fit would drop it frozen.
            if getattr(model, "_eval_epoch_iterator", None) is not None:
                model._eval_epoch_iterator = None
        unfrozen = self.let_go and free_dropped
        if unfrozen:
            gc.unfreeze()
            self.let_go = False
        gc.collect()
        if self._models or unfrozen:  # unfrozen: what the worker froze at its start, again
            gc.freeze()

    def __len__(self) -> int:
        return len(self._models)


POOL = StepPool()
