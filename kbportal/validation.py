"""Request validation with DRF serializers, remembered for the parameters that repeat.

A DRF serializer deep-copies its declared fields every time it is made: about a sixth of a cached
search's CPU. API traffic repeats a few combinations of most parameters (knowledge base, mode,
size, filters) while one field changes every time (the query, the question). `validated` checks
the repeating parameters once per process for each distinct combination (LRU) and the changing
field on its own, with the serializer's own field; anything invalid goes through the whole
serializer, so errors are reported exactly as DRF reports them, every field at once.

The remembered key holds only the serializer's declared fields (it ignores others), each value
with its type: True == 1 == 1.0, and each validates differently. The serializer's cross-field
`validate()` must not involve the changing field (it is checked with a stand-in value).
"""

from __future__ import annotations

import functools

from rest_framework import serializers
from rest_framework.fields import empty


def validated(serializer_class: type[serializers.Serializer], data: dict, *, changing: str) -> dict:
    """`serializer_class(data=data)`'s validated data; ValidationError as the serializer raises it."""
    if not isinstance(data, dict):  # a JSON list or string: the serializer says what is wrong
        return _validate(serializer_class, data)
    fields = serializer_class._declared_fields
    try:
        frozen = tuple(sorted((name, _typed(value)) for name, value in data.items()
                              if name in fields and name != changing))
        hash(frozen)
    except TypeError:  # nested objects in a JSON body
        return _validate(serializer_class, data)
    try:
        values = dict(_validate_repeating(serializer_class, changing, frozen))
        values[changing] = _field(serializer_class, changing).run_validation(data.get(changing, empty))
    except serializers.ValidationError:
        return _validate(serializer_class, data)
    return values


def _typed(value) -> tuple:
    if isinstance(value, list):
        return "list", tuple(_typed(item) for item in value)
    return type(value).__name__, value


def _untyped(value: tuple):
    kind, inner = value
    return [_untyped(item) for item in inner] if kind == "list" else inner


#: A value the changing field accepts, standing in for it while the others are checked.
STAND_IN = "-"


@functools.lru_cache(maxsize=1024)
def _validate_repeating(serializer_class: type[serializers.Serializer], changing: str, frozen: tuple) -> dict:
    values = _validate(serializer_class, {**{name: _untyped(value) for name, value in frozen}, changing: STAND_IN})
    del values[changing]
    # Shared by every request with these parameters: lists become tuples, so nobody changes them.
    return {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}


@functools.cache
def _field(serializer_class: type[serializers.Serializer], name: str) -> serializers.Field:
    """The serializer's field `name`, bound once (validating a value keeps no state on a field)."""
    return serializer_class().fields[name]


def _validate(serializer_class: type[serializers.Serializer], data: dict) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
