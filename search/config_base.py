"""The base of a study config's sections (strict, frozen pydantic models) and the one-line
`ConfigError` that pydantic's `ValidationError` becomes.

A `Section` refuses unknown keys and values of the wrong type (an int is a float too; a bool
is no number). A range is a `Field` constraint with a `Says` beside it, the message that
names what is allowed; any other check is a validator that raises `refuse(...)`.

`config_error` reports the first of pydantic's errors, as ``<source>: <key>: <message>``.
A config is read in two passes: first every section's shape (a mapping, known keys, values
of the right types) in `read_order`, then the values, in `check_order`; the first pass with
an error gives the one reported. Within a section an unknown key (the first, sorted) comes
before a wrong type (the first in the file), and values go in the order of the fields.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from search.errors import ConfigError

# pydantic's error types for a value of the wrong type, with the type each one expects.
TYPE_ERRORS = {
    "int_type": "int",
    "float_type": "float",
    "string_type": "str",
    "bool_type": "bool",
    "list_type": "list",
    "dict_type": "dict",
}
# Where a section is not a mapping, a key is unknown or missing: part of the first pass.
SHAPE_ERRORS = ("model_type", "extra_forbidden", "missing")
READ, CHECK = "config_read", "config_check"  # the types of `refuse`'s errors


class Section(BaseModel):
    """A part of a study config: frozen, no unknown keys, no type coercion."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


@dataclass(frozen=True)
class Says:
    """The message of a field's range constraints; ``{value}`` is the value given."""

    template: str


@dataclass(frozen=True)
class ReadAs:
    """Read a field (a dataclass from outside the config, such as models' Augmentation)
    as `model`, a `Section` with the same fields, and keep the dataclass."""

    model: type[Section]

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        return core_schema.no_info_after_validator_function(
            lambda section: source(**dict(section)),
            handler.generate_schema(self.model),
            serialization=core_schema.plain_serializer_function_ser_schema(asdict),
        )


def refuse(message: str, key: str | None = None, *, read: bool = False) -> PydanticCustomError:
    """The error of a failed check, reported as ``<key>: <message>``.

    Args:
        message: What is wrong and what is allowed.
        key: The key to name (default: the checked field's path); ``""`` when the message
            names its key itself.
        read: Whether the error belongs to the first pass (the shape, not the values).
    """
    return PydanticCustomError(
        READ if read else CHECK, "{message}", {"message": message, "key": key}
    )


def one_of(allowed: Collection[str], what: str) -> AfterValidator:
    """A check that a word is one of `allowed`: ``unknown <what> 'x'; allowed: ...``."""

    def check(value: str) -> str:
        if value not in allowed:
            raise refuse(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def read_section(cls: type[Section], raw: Any, source: str, key: str) -> Any:
    """Validate one section on its own (None: the defaults), as in a whole config.

    Raises:
        ConfigError: the first error, naming ``<key>.<field>``.
    """
    if raw is None:
        return cls()
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc, raw, source, cls, (key,)) from None


def config_error(
    exc: ValidationError,
    raw: Any,
    source: str,
    model: type[BaseModel],
    prefix: tuple[str, ...] = (),
    read_order: Sequence[str] = ("",),
    check_order: Sequence[str] = ("",),
) -> ConfigError:
    """The one-line error for the first of `exc`'s errors (see the module docstring).

    Args:
        exc: What ``model.model_validate(raw)`` raised.
        raw: The mapping that was validated.
        source: The config's file name (or another word), the message's first part.
        model: The validated model.
        prefix: The path of `model` within the config (a section read on its own).
        read_order, check_order: Dotted paths of the sections in the order of each pass
            (``""``: the model itself); an error belongs to the longest that holds it.
    """
    errors = exc.errors(include_url=False)
    first = min(errors, key=lambda e: _rank(e, raw, model, read_order, check_order))
    return ConfigError(f"{source}: {_message(first, model, prefix)}")


def _rank(
    error: Mapping[str, Any],
    raw: Any,
    model: type[BaseModel],
    read_order: Sequence[str],
    check_order: Sequence[str],
) -> tuple:
    loc = tuple(str(part) for part in error["loc"])
    kind = error["type"]
    if kind in SHAPE_ERRORS or kind in TYPE_ERRORS or kind == READ:
        owner = loc[:-1] if kind in ("extra_forbidden", "missing") else loc
        section = _section(owner, read_order)
        if kind == "extra_forbidden":
            return (0, section, 1, loc[-1])
        step = {"model_type": 0, "missing": 2}.get(kind, 3)
        return (0, section, step, _position_in(raw, loc) if step == 3 else "")
    section = _section(loc, check_order)
    depth = len(check_order[section].split(".")) if check_order[section] else 0
    return (1, section, 0, _field_index(model, loc, depth))


def _section(loc: tuple[str, ...], order: Sequence[str]) -> int:
    """The index in `order` of the longest section path that `loc` lies in."""
    best, best_len = len(order), -1
    for index, path in enumerate(order):
        parts = tuple(path.split(".")) if path else ()
        if loc[: len(parts)] == parts and len(parts) > best_len:
            best, best_len = index, len(parts)
    return best


def _position_in(raw: Any, loc: tuple[str, ...]) -> str:
    """Where the key at `loc` stands in its mapping in the file, as a sortable text."""
    node = raw
    for part in loc[:-1]:
        node = node.get(part) if isinstance(node, Mapping) else None
    keys = list(node) if isinstance(node, Mapping) else []
    return f"{keys.index(loc[-1]) if loc and loc[-1] in keys else len(keys):08d}"


def _field_index(model: type[BaseModel], loc: tuple[str, ...], depth: int) -> str:
    """The position of the field at ``loc[depth]`` among its section's fields (the section
    itself, a check across its fields, comes after them)."""
    section = _model_at(model, loc[:depth])
    names = list(section.model_fields) if section is not None else []
    at = loc[depth] if len(loc) > depth else None
    return f"{names.index(at) if at in names else len(names):08d}"


def _model_at(model: type[BaseModel] | None, loc: Sequence[str]) -> type[BaseModel] | None:
    for part in loc:
        info = model.model_fields.get(part) if model is not None else None
        model = _section_type(info.annotation, info.metadata) if info is not None else None
    return model


def _section_type(annotation: Any, metadata: list) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m.model for m in metadata if isinstance(m, ReadAs)), None)


def _message(error: Mapping[str, Any], model: type[BaseModel], prefix: tuple[str, ...]) -> str:
    loc = tuple(str(part) for part in error["loc"])
    path = ".".join((*prefix, *loc))
    kind, value = error["type"], error.get("input")
    if kind in (READ, CHECK):
        key, message = error["ctx"]["key"], error["ctx"]["message"]
        return message if key == "" else f"{path if key is None else key}: {message}"
    if kind == "model_type":
        got = type(value).__name__
        if not path:
            return f"the config must be a mapping of sections, got {got}"
        return f"{path} must be a mapping, got {got}"
    if kind == "extra_forbidden":
        allowed = sorted(getattr(_model_at(model, loc[:-1]), "model_fields", ()))
        return f"unknown key {path}; allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        return f"the section '{path}' is required"
    if kind in TYPE_ERRORS:
        return f"{path}: expected {TYPE_ERRORS[kind]}, got {value!r}"
    parent = _model_at(model, loc[:-1])
    info = parent.model_fields.get(loc[-1]) if parent is not None and loc else None
    says = next((m for m in info.metadata if isinstance(m, Says)), None) if info else None
    if info is None or says is None:
        return f"{path}: {error['msg']}"
    return f"{path}: {says.template.format(value=_as_given(value, info.annotation))}"


def _as_given(value: Any, annotation: Any) -> Any:
    """`value` as the field holds it: an int in a float field is a float."""
    floats = annotation is float or float in get_args(annotation)
    if floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
