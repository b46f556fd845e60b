"""kbportal.validation: the remembered validation answers exactly as the serializer itself would."""

import pytest
from rest_framework import serializers

from kbportal.validation import validated


class Input(serializers.Serializer):
    q = serializers.CharField(max_length=20)
    size = serializers.IntegerField(min_value=1, max_value=50, default=10)
    exact = serializers.BooleanField(default=False)


def serializer_answer(data: dict):
    serializer = Input(data=data)
    return dict(serializer.validated_data) if serializer.is_valid() else serializer.errors


def validated_answer(data: dict):
    try:
        return dict(validated(Input, data, changing="q"))
    except serializers.ValidationError as exc:
        return exc.detail


@pytest.mark.parametrize("data", [
    {"q": "a"},
    {"q": "b", "size": "5"},
    {"q": "c", "size": 5, "exact": "true"},
    {"q": "d", "size": "5", "ignored": "x"},
    {"q": "x" * 30},  # the changing field invalid, the remembered ones valid
    {"q": "e", "size": 0},
    {"q": "x" * 30, "size": 99, "exact": "maybe"},  # every field at once, as DRF reports them
    {"size": 5},
])
def test_answers_exactly_as_the_serializer_twice_in_a_row(data):
    expected = serializer_answer(data)
    assert validated_answer(data) == expected
    assert validated_answer(data) == expected  # the second time from the remembered combination


def test_a_remembered_combination_still_checks_the_changing_field():
    assert validated_answer({"q": "fine", "size": 7})["size"] == 7
    assert "q" in validated_answer({"q": "x" * 21, "size": 7})
