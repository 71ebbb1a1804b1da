"""The one JSON codec (lash_core._json): typed errors for every value it cannot carry."""

from __future__ import annotations

import json

import pytest
from unencodable import BAD_VALUES, deep_list
from hypothesis import given, strategies as st

from lash_core import (
    JsonValueError,
    JsonValueKind,
    LashError,
    decode_json,
    encode_json,
    json_summary,
    short_repr,
    summary_fallback,
    to_plain_json,
)
from lash_core._json import truncate


@pytest.mark.parametrize(("make", "kind"), BAD_VALUES.values(), ids=list(BAD_VALUES))
def test_encode_turns_every_failure_into_one_typed_error(make, kind):
    value = make()
    with pytest.raises(JsonValueError) as info:
        encode_json(value)
    assert info.value.kind == kind
    assert isinstance(info.value, (LashError, ValueError))
    assert len(str(info.value)) < 400
    with pytest.raises(JsonValueError):
        to_plain_json(value)
    text = json_summary(value, 60)  # never raises and is bounded; NaN and objects still show
    assert len(text) <= 60
    if kind == JsonValueKind.TOO_DEEP:
        assert text == truncate(summary_fallback(info.value), 60) and kind in text


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xfe", JsonValueKind.NOT_UTF8),
        (b'{"a": "\xed\xa0\x80"}', JsonValueKind.NOT_UTF8),  # an encoded lone surrogate
        ("{", JsonValueKind.MALFORMED),
        ("[" * 100_000 + "]" * 100_000, JsonValueKind.TOO_DEEP),
        ("1" * 5000, JsonValueKind.OUT_OF_RANGE),
        (7, JsonValueKind.UNSUPPORTED),
    ],
    ids=["bad-utf8", "surrogate-bytes", "malformed", "deep", "huge-int", "not-text"],
)
def test_decode_turns_every_failure_into_one_typed_error(data, kind):
    with pytest.raises(JsonValueError) as info:
        decode_json(data)
    assert info.value.kind == kind


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_plain_values_encode_like_json_dumps_and_round_trip(value):
    assert encode_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert to_plain_json(value) == value
    assert decode_json(encode_json(value).encode("utf-8")) == value


@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_the_typed_error(data):
    try:
        decode_json(data)
    except JsonValueError:
        pass


@given(st.integers(min_value=1, max_value=200), json_values)
def test_summaries_are_bounded(limit, value):
    assert len(json_summary(value, limit)) <= limit


def test_short_repr_is_bounded_and_never_raises():
    class Broken:
        def __repr__(self):
            raise RuntimeError("no")

    assert len(short_repr("x" * 10_000_000)) <= 80
    assert short_repr(deep_list()).startswith("[[")
    assert "Broken" in short_repr(Broken())  # reprlib names the class when repr fails
    assert short_repr({"a": 1}) == "{'a': 1}"


def test_summaries_and_reprs_survive_hostile_leaves():
    class BadStr:
        def __str__(self):
            raise RuntimeError("no str")

        def __repr__(self):
            return "BadStr()"

    assert json_summary({"a": BadStr()}, 80) == '{"a": "BadStr()"}'
    assert short_repr([10**5000]) == "[<int of 16610 bits>]"
    assert short_repr(10**5000) == "<int of 16610 bits>"
    assert encode_json({"a": [1]}, indent=2) == '{\n  "a": [\n    1\n  ]\n}'


def test_lone_surrogates_never_enter_or_leave_the_codec():
    for value in ("x\udcff", {"k\ud800": 1}, ["ok", "\udc00"]):
        with pytest.raises(JsonValueError) as info:
            encode_json(value)
        assert info.value.kind == JsonValueKind.NOT_UTF8
    for text in ('"\\ud800"', '{"a": "\\udc00x"}', '["\\uDBFF"]'):
        with pytest.raises(JsonValueError) as info:
            decode_json(text)
        assert info.value.kind == JsonValueKind.NOT_UTF8
    assert decode_json('"\\ud83d\\ude00"') == "\U0001f600"  # a pair is one character
    assert decode_json('"caf\u00e9"') == "caf\u00e9"
