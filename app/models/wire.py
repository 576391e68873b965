"""The base of pydock's wire models: Docker's JSON conventions in one place.

- Requests ignore unknown fields (CLI 28 sends fields newer than the API version we serve).
- Requests accept `null` for any field: where the Python type has no `None`, a null means
  "not given" and the default applies, as Go's decoder leaves the zero value in place.
- Responses keep Go's `omitempty`: a field declared with `omit_empty()` disappears from the
  JSON when it holds its zero value (None, 0, "", False, empty list or map); one declared with
  `omit_none()` (a Go pointer) only when it is null.

This module holds no Docker types itself; it imports nothing but pydantic.
"""

from __future__ import annotations

import types
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

T = TypeVar("T")


def _is_none(value: object) -> bool:
    return value is None


def _is_empty(value: object) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def omit_empty(default: T) -> T:
    """A field with Go's `json:",omitempty"`: left out of responses when it is a zero value."""
    field: T = Field(default, exclude_if=_is_empty)
    return field


def omit_none(default: T) -> T:
    """A pointer field with Go's `omitempty`: left out only when null (a pointer to 0 stays)."""
    field: T = Field(default, exclude_if=_is_none)
    return field


def _allows_none(annotation: object) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any or annotation is object:
        return True
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return any(_allows_none(arg) for arg in get_args(annotation))
    return False


class WireModel(BaseModel):
    """Base of every Engine API body: Docker's names, unknown fields ignored, null tolerated."""

    model_config = ConfigDict(
        extra="ignore", populate_by_name=True, serialize_by_alias=True, validate_assignment=False
    )

    _non_nullable: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: object) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._non_nullable = frozenset(
            name for name, info in cls.model_fields.items() if not _allows_none(info.annotation)
        )

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data: object) -> object:
        if isinstance(data, dict):
            _check_int64(data, "")
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or k not in cls._non_nullable}
        return data

    def wire(self) -> dict[str, object]:
        """The JSON-ready dict of this body as Docker writes it."""
        return self.model_dump(mode="json", by_alias=True)


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _check_int64(value: object, where: str) -> None:
    """Every JSON number of the Engine API is a Go int64 (or narrower): dockerd's decoder refuses
    larger ones with a 400, and letting one through would overflow later, in a cgroup file, a
    timer or a syscall (issue 8)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            target = f"Go struct field {where}" if where else "Go value"
            raise ValueError(f"json: cannot unmarshal number {value} into {target} of type int64")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_int64(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for item in value:
            _check_int64(item, where)
