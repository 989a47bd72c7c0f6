"""Dead letters are bounded: headers never grow with the input, and a record too large
to keep whole is cut to fit, with a marker and the original's size and SHA-256."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.envelope import (
    H_KEY_BYTES,
    H_KEY_SHA256,
    H_REASON,
    H_TRUNCATED,
    H_VALUE_BYTES,
    H_VALUE_SHA256,
    MAX_REASON_BYTES,
    DeadLetter,
    Envelope,
    deadletter_record,
)

AT = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
MB = 1024 * 1024


def dead(key: bytes | None, value: bytes | None, reason: str = "bad", topic: str = "metricx.insights.raw") -> DeadLetter:
    return DeadLetter(Envelope(key, value, topic, 3, 10**15, None), reason, "validate")


def wire_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    """An upper bound of a Kafka v2 record's size, written from the protocol (varints of
    at most 5 bytes for each length and field, 1 attribute byte), not from the code."""
    return 5 * 6 + 1 + len(key or b"") + len(value) + sum(5 + len(k.encode()) + 5 + len(v) for k, v in headers)


def test_a_small_dead_letter_is_whole_and_untouched() -> None:
    rec = deadletter_record(dead(b"sim:a:b", b"{not json", "not valid JSON"), AT, MB)
    assert (rec.key, rec.value, rec.truncated) == (b"sim:a:b", b"{not json", False)
    names = [k for k, _ in rec.headers]
    assert H_TRUNCATED not in names and H_VALUE_SHA256 not in names
    assert dict(rec.headers)[H_REASON] == b"not valid JSON"


def test_a_tombstone_becomes_an_empty_value() -> None:
    rec = deadletter_record(dead(b"k", None, "message has no value (tombstone)"), AT, MB)
    assert (rec.key, rec.value) == (b"k", b"")


def test_reasons_are_cut_at_a_character_and_say_how_long_they_were() -> None:
    reason = "é" * 400_000  # 800,000 bytes of two-byte characters
    header = dict(deadletter_record(dead(b"k", b"v", reason), AT, MB).headers)[H_REASON]
    assert len(header) <= MAX_REASON_BYTES
    text = header.decode()  # strict: no half character
    assert text.startswith("é" * 100) and "800000 bytes" in text


def test_a_huge_key_is_kept_whole_when_the_record_fits() -> None:
    key = b"k" * 600_000
    rec = deadletter_record(dead(key, b"{}"), AT, 2 * MB)
    assert (rec.key, rec.value, rec.truncated) == (key, b"{}", False)


def test_a_huge_key_is_cut_before_the_value() -> None:
    key, value = b"k" * 900_000, b"v" * 500_000
    rec = deadletter_record(dead(key, value), AT, MB)
    assert rec.value == value and rec.key is not None and key.startswith(rec.key) and len(rec.key) < len(key)
    hs = dict(rec.headers)
    assert hs[H_TRUNCATED] == b"key"
    assert hs[H_KEY_SHA256].decode() == hashlib.sha256(key).hexdigest() and int(hs[H_KEY_BYTES]) == len(key)


@settings(max_examples=60, deadline=None)
@given(
    key_len=st.one_of(st.none(), st.integers(0, 3 * MB)),
    value_len=st.integers(0, 3 * MB),
    reason_len=st.integers(0, 200_000),
    topic_len=st.integers(1, 249),
    max_bytes=st.integers(64 * 1024, 4 * MB),
)
def test_every_dead_letter_fits_and_a_cut_one_says_so(
    key_len: int | None, value_len: int, reason_len: int, topic_len: int, max_bytes: int
) -> None:
    key = None if key_len is None else b"K" * key_len
    value = b"V" * value_len
    rec = deadletter_record(dead(key, value, "r" * reason_len, "t" * topic_len), AT, max_bytes)
    assert wire_size(rec.key, rec.value, rec.headers) <= max_bytes
    assert len(dict(rec.headers)[H_REASON]) <= MAX_REASON_BYTES
    hs = dict(rec.headers)
    if not rec.truncated:
        assert (rec.key, rec.value) == (key, value)
        assert not {H_KEY_SHA256, H_VALUE_SHA256, H_KEY_BYTES, H_VALUE_BYTES} & set(hs)
        return
    # Cut only when the whole could not fit (headers take at most ~2 KB), and no deeper
    # than needed: the copy uses nearly all of the room.
    assert len(key or b"") + value_len > max_bytes - 4096
    assert wire_size(rec.key, rec.value, rec.headers) > max_bytes - 4096
    assert value.startswith(rec.value) and (key is None) == (rec.key is None)
    assert key is None or key.startswith(rec.key or b"")
    cut = {p for p, kept, orig in (("key", rec.key, key), ("value", rec.value, value))
           if orig is not None and len(kept or b"") < len(orig)}
    assert set(hs[H_TRUNCATED].decode().split(",")) == cut and cut
    assert hs[H_VALUE_SHA256].decode() == hashlib.sha256(value).hexdigest()
    assert int(hs[H_VALUE_BYTES]) == value_len
    if key is not None:
        assert hs[H_KEY_SHA256].decode() == hashlib.sha256(key).hexdigest() and int(hs[H_KEY_BYTES]) == len(key)
