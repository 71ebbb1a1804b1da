import json
import pickle

import pytest
from hypothesis import given, strategies as st

from lash_core._cursor import U64_MAX, SessionCursor, SessionRevision
from lash_core._errors import (
    LiveReplayStoreError,
    MalformedCursorError,
    SessionCursorError,
    WrongSessionError,
)


def test_revision_is_unsigned_64_bit():
    assert SessionRevision(0) == 0
    assert SessionRevision(U64_MAX) == 2**64 - 1
    assert isinstance(SessionRevision(3), int)
    assert repr(SessionRevision(3)) == "SessionRevision(3)"
    with pytest.raises(ValueError, match="out of range"):
        SessionRevision(-1)
    with pytest.raises(ValueError, match="out of range"):
        SessionRevision(2**64)
    with pytest.raises(TypeError):
        SessionRevision(True)
    with pytest.raises(TypeError):
        SessionRevision("3")


def test_cursor_round_trips_and_repr_is_opaque():
    cursor = SessionCursor.new("session:with:colon", SessionRevision(3), 9)
    assert str(cursor) == "lashsc1:3:9:session:with:colon"
    assert cursor.as_str() == str(cursor)
    assert repr(cursor) == "SessionCursor(<opaque>)"
    assert "lashsc1" not in repr([cursor])
    decoded = SessionCursor(json.loads(json.dumps(cursor.to_json())))
    assert decoded == cursor and hash(decoded) == hash(cursor)
    assert pickle.loads(pickle.dumps(cursor)) == cursor
    parsed = cursor.parse_for_session("session:with:colon")
    assert parsed.session_id == "session:with:colon"
    assert parsed.revision == SessionRevision(3)
    assert parsed.live_position == 9


def test_cursor_compares_only_with_cursors():
    assert SessionCursor("a") != "a"
    assert SessionCursor("a") != SessionCursor("b")
    assert {SessionCursor("a"), SessionCursor("a")} == {SessionCursor("a")}


def test_error_hierarchy():
    assert issubclass(MalformedCursorError, SessionCursorError)
    assert issubclass(WrongSessionError, SessionCursorError)
    assert issubclass(SessionCursorError, LiveReplayStoreError)


@pytest.mark.parametrize(
    "raw, message",
    [
        ("bad", "missing cursor prefix"),
        ("", "missing cursor prefix"),
        ("LASHSC1:1:1:s", "missing cursor prefix"),
        ("lashsc1:", "invalid session revision: cannot parse integer from empty string"),
        ("lashsc1::1:s", "invalid session revision: cannot parse integer from empty string"),
        ("lashsc1:x:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1:-1:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1:+:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1: 1:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1:1_0:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1:\u0661:1:s", "invalid session revision: invalid digit found in string"),
        ("lashsc1:18446744073709551616:1:s", "invalid session revision: number too large"),
        ("lashsc1:1", "missing live replay position"),
        ("lashsc1:1:", "invalid live replay position: cannot parse integer from empty string"),
        ("lashsc1:1:x:s", "invalid live replay position: invalid digit found in string"),
        ("lashsc1:1:2 :s", "invalid live replay position: invalid digit found in string"),
        ("lashsc1:1:99999999999999999999:s", "invalid live replay position: number too large"),
        ("lashsc1:1:2", "missing session id"),
        ("lashsc1:1:2:", "missing session id"),
    ],
)
def test_malformed_cursors_are_rejected_with_rust_messages(raw, message):
    with pytest.raises(MalformedCursorError, match=message) as info:
        SessionCursor(raw).parse()
    assert str(info.value).startswith("malformed session cursor: ")


def test_plus_sign_and_leading_zeros_parse_like_rust():
    parsed = SessionCursor("lashsc1:+7:007:s").parse()
    assert (parsed.revision, parsed.live_position, parsed.session_id) == (7, 7, "s")
    top = SessionCursor(f"lashsc1:{U64_MAX}:{U64_MAX}:s").parse()
    assert top.revision == U64_MAX and top.live_position == U64_MAX


def test_wrong_session_carries_both_ids():
    cursor = SessionCursor.new("actual", 0, 0)
    with pytest.raises(WrongSessionError, match="belongs to `actual`, not `expected`") as info:
        cursor.parse_for_session("expected")
    assert info.value.expected_session_id == "expected"
    assert info.value.actual_session_id == "actual"
    with pytest.raises(MalformedCursorError):
        SessionCursor("bad").parse_for_session("expected")


def test_new_rejects_bad_parts():
    with pytest.raises(ValueError):
        SessionCursor.new("", 0, 0)
    with pytest.raises(ValueError):
        SessionCursor.new("s", 0, -1)
    with pytest.raises(TypeError):
        SessionCursor(123)  # type: ignore[arg-type]


session_ids = st.text(min_size=1).filter(lambda s: s != "")
u64 = st.integers(min_value=0, max_value=U64_MAX)


@given(session_ids, u64, u64)
def test_round_trip_any_session_id(session_id, revision, position):
    cursor = SessionCursor.new(session_id, revision, position)
    parsed = cursor.parse_for_session(session_id)
    assert (parsed.session_id, parsed.revision, parsed.live_position) == (
        session_id,
        revision,
        position,
    )
    assert SessionCursor(json.loads(json.dumps(str(cursor)))) == cursor
    assert repr(cursor) == "SessionCursor(<opaque>)"


def _is_rust_u64(text: str) -> bool:
    """An independent statement of Rust's u64::from_str: a regex, then a bound."""
    import re

    return re.fullmatch(r"\+?[0-9]+", text, flags=re.ASCII) is not None and int(text) <= U64_MAX


number_like = st.one_of(
    st.text(alphabet="0123456789+-_ \t\u0661\u0e51\uff11e.", max_size=24),
    st.integers(min_value=U64_MAX - 3, max_value=U64_MAX + 3).map(str),
    st.integers(min_value=0, max_value=U64_MAX).map(lambda n: "0" * 30 + str(n)),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
)


@given(number_like, number_like, st.text(max_size=8))
def test_any_field_combination_parses_or_fails_with_the_right_error(rev, pos, sid):
    raw = f"lashsc1:{rev}:{pos}:{sid}"
    should_parse = _is_rust_u64(rev) and _is_rust_u64(pos) and sid != ""
    if should_parse:
        parsed = SessionCursor(raw).parse()
        assert parsed.session_id == sid
        assert parsed.revision == int(rev)
        assert parsed.live_position == int(pos)
    else:
        with pytest.raises(MalformedCursorError):
            SessionCursor(raw).parse()


@given(st.one_of(st.text(max_size=40), st.text(max_size=40).map(lambda t: "lashsc1:" + t)))
def test_arbitrary_strings_parse_or_raise_malformed_never_anything_else(raw):
    try:
        parsed = SessionCursor(raw).parse()
    except MalformedCursorError:
        return
    assert str(SessionCursor.new(parsed.session_id, parsed.revision, parsed.live_position)).endswith(
        ":" + parsed.session_id
    )


def test_many_leading_zeros_parse_like_rust_and_huge_numbers_are_too_large():
    padded = SessionCursor("lashsc1:" + "0" * 5000 + "1:" + "0" * 5000 + ":s").parse()
    assert (padded.revision, padded.live_position) == (1, 0)
    with pytest.raises(MalformedCursorError, match="invalid session revision: number too large"):
        SessionCursor("lashsc1:" + "9" * 5000 + ":0:s").parse()
    with pytest.raises(MalformedCursorError, match="invalid live replay position: number too large"):
        SessionCursor("lashsc1:0:1" + "0" * 20 + ":s").parse()


@given(session_ids, session_ids, u64, u64)
def test_wrong_session_for_any_other_id(a, b, revision, position):
    cursor = SessionCursor.new(a, revision, position)
    if a == b:
        assert cursor.parse_for_session(b).session_id == a
    else:
        with pytest.raises(WrongSessionError):
            cursor.parse_for_session(b)


def _rust_u64_from_str(text: str) -> int | str:
    """A transcription of Rust's ``u64::from_str`` (core::num, ``from_str_radix``), byte by byte:
    the value, or the error message. For each byte the multiplication is checked *after* the
    digit: an invalid byte wins over an overflow at the same step, an earlier overflow wins over a
    later invalid byte."""
    src = text.encode("utf-8")
    if not src:
        return "cannot parse integer from empty string"
    if src[:1] in (b"+", b"-") and len(src) == 1:
        return "invalid digit found in string"
    digits = src[1:] if src[:1] == b"+" else src
    result = 0
    for byte in digits:
        mul = result * 10
        if not 0x30 <= byte <= 0x39:
            return "invalid digit found in string"
        if mul > U64_MAX:
            return "number too large to fit in target type"
        result = mul + (byte - 0x30)
        if result > U64_MAX:
            return "number too large to fit in target type"
    return result


digit_soup = st.one_of(
    number_like,
    st.text(alphabet="09+-x\u0661", min_size=15, max_size=30),
    st.tuples(
        st.integers(min_value=0, max_value=4600),
        st.integers(min_value=0, max_value=2**70),
        st.sampled_from(["", "x", "-", "\u0661", " ", "0"]),
        st.text(alphabet="0123456789x", max_size=25),
    ).map(lambda t: "0" * t[0] + str(t[1]) + t[2] + t[3]),
)


@given(digit_soup)
def test_cursor_numbers_fail_with_rusts_message_in_rusts_order(text):
    expected = _rust_u64_from_str(text)
    for raw, field in ((f"lashsc1:{text}:0:s", "session revision"), (f"lashsc1:0:{text}:s", "live replay position")):
        if isinstance(expected, int):
            parsed = SessionCursor(raw).parse()
            assert (parsed.revision if field == "session revision" else parsed.live_position) == expected
        else:
            with pytest.raises(MalformedCursorError) as info:
                SessionCursor(raw).parse()
            assert info.value.message == f"invalid {field}: {expected}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999999999999x", "number too large to fit in target type"),
        ("1x99999999999999999999", "invalid digit found in string"),
        ("1844674407370955161x", "invalid digit found in string"),
        ("18446744073709551616x", "number too large to fit in target type"),
        ("+99999999999999999999x", "number too large to fit in target type"),
        ("0" * 4400 + "18446744073709551616-", "number too large to fit in target type"),
        ("0" * 4400 + "1844674407370955161-", "invalid digit found in string"),
        ("+", "invalid digit found in string"),
        ("-", "invalid digit found in string"),
        ("", "cannot parse integer from empty string"),
    ],
)
def test_rust_error_order_examples(text, message):
    assert _rust_u64_from_str(text) == message
    with pytest.raises(MalformedCursorError) as info:
        SessionCursor(f"lashsc1:0:{text}:s").parse()
    assert info.value.message == f"invalid live replay position: {message}"
    assert str(info.value) == f"malformed session cursor: invalid live replay position: {message}"


def test_thousands_of_leading_zeros_give_the_small_position():
    cursor = SessionCursor("lashsc1:0:" + "0" * 4400 + "7:s")
    assert cursor.parse().live_position == 7


def test_belongs_to_is_parse_for_session_as_a_bool():
    assert SessionCursor.new("a:b", 1, 2).belongs_to("a:b")
    assert not SessionCursor.new("a", 1, 2).belongs_to("b")
    assert not SessionCursor("nonsense").belongs_to("a")
    assert not SessionCursor("lashsc1:1:" + "9" * 30 + ":a").belongs_to("a")
