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
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or k not in cls._non_nullable}
        return data

    def wire(self) -> dict[str, object]:
        """The JSON-ready dict of this body as Docker writes it."""
        return self.model_dump(mode="json", by_alias=True)
