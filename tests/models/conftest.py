from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_session() -> Iterator[None]:
    """Free each test's models, as the worker does between trials (clear_session collects)."""
    yield
    from models.backend import keras_module

    keras_module().backend.clear_session()
