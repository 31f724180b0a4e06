"""Storage calls that ride out an outage: `RetryingStorage` and where it sits.

Part of `search.runtime.optuna_compat`'s interface (it re-exports these names); kept apart
to keep that module one screenful of Optuna internals.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.runtime.outage import Outage


class RetryingStorage:
    """A storage whose every method call retries transient errors (see `Outage`): under
    Optuna's caching wrapper (or round a proxy client), every storage call a worker makes
    (claims, epochs, attributes, tells) is retried without wrapping call sites. A retried
    tell whose first commit had landed reads as done."""

    def __init__(self, inner: Any, outage: Outage) -> None:
        self.inner, self.outage = inner, outage

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not inspect.isroutine(attr):
            return attr
        if name == "set_trial_state_values":
            return self._set_trial_state_values
        from search.runtime.optuna_compat import CREATE_TRIAL_METHOD

        if name == CREATE_TRIAL_METHOD or (name == "create_new_trial" and self._proxied()):
            return functools.partial(self._create_retried, name)
        return functools.partial(self.outage.call, attr)

    def _proxied(self) -> bool:
        from search.runtime.proxy import is_proxy

        return is_proxy(self.inner)

    def _create_retried(
        self, method: str, study_id: int, template_trial: FrozenTrial | None = None
    ) -> Any:
        """A retried creation of a queued trial (`retry_trial`) finds the one whose first
        commit landed by its token instead of queueing the parameters twice. `method` is
        RDBStorage's trial creation (`CREATE_TRIAL_METHOD`, a trial back) or, through the storage proxy,
        `create_new_trial` (its id back)."""
        from search.runtime.optuna_compat import CREATE_TRIAL_METHOD, TOKEN_ATTR, trial_id

        token = template_trial.system_attrs.get(TOKEN_ATTR) if template_trial else None
        attempts = 0

        def attempt() -> Any:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and token is not None:
                waiting = self.inner.get_all_trials(study_id, states=(TrialState.WAITING,))
                landed = [t for t in waiting if t.system_attrs.get(TOKEN_ATTR) == token]
                if landed:
                    found = landed[0]
                    return found if method == CREATE_TRIAL_METHOD else trial_id(found)
            return getattr(self.inner, method)(study_id, template_trial)

        return self.outage.call(attempt)

    def _set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        attempts = 0

        def attempt() -> bool:
            nonlocal attempts
            attempts += 1
            try:
                return self.inner.set_trial_state_values(trial_id, state=state, values=values)
            except optuna.exceptions.UpdateFinishedTrialError:
                # A retry after a commit that landed but whose answer was lost.
                if attempts > 1 and self.inner.get_trial(trial_id).state == state:
                    return True
                raise

        return self.outage.call(attempt)


def retry_storage(study: optuna.Study, outage: Outage) -> None:
    """Put `RetryingStorage` under the study's caching wrapper (or round a proxy client)."""
    from search.runtime.optuna_compat import wrap_storage

    wrap_storage(study, lambda storage: RetryingStorage(storage, outage))
