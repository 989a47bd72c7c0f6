"""AES-256-GCM token encryption: round trip, key ids, rotation, tamper and swap detection."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from adapters.crypto import Keyring, TokenKeyError, aad_for, generate_key
from ground.settings import TokenKeySettings

K1, K2 = generate_key(), generate_key()
AAD = aad_for("ws", "meta", "111")


def test_round_trip_under_active_key_with_fresh_nonces() -> None:
    ring = Keyring.from_settings(TokenKeySettings(keys=SecretStr(f"k1:{K1}"), key_id=None))
    kid, blob = ring.encrypt(b"EAAsecret-token", AAD)
    kid2, blob2 = ring.encrypt(b"EAAsecret-token", AAD)
    assert kid == kid2 == "k1" and blob != blob2
    assert b"EAAsecret" not in blob
    assert ring.decrypt(kid, blob, AAD) == b"EAAsecret-token"


def test_rotation_old_key_still_decrypts_new_key_encrypts() -> None:
    old = Keyring.parse(f"k1:{K1}", None)
    kid, blob = old.encrypt(b"tok", AAD)
    both = Keyring.parse(f"k1:{K1},k2:{K2}", "k2")
    assert both.decrypt(kid, blob, AAD) == b"tok"
    assert both.encrypt(b"tok", AAD)[0] == "k2"
    with pytest.raises(TokenKeyError, match="'k1'"):
        Keyring.parse(f"k2:{K2}", None).decrypt(kid, blob, AAD)


def test_tampering_and_row_swaps_are_refused() -> None:
    ring = Keyring.parse(f"k1:{K1}", None)
    kid, blob = ring.encrypt(b"tok", AAD)
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(TokenKeyError, match="authenticate"):
        ring.decrypt(kid, flipped, AAD)
    with pytest.raises(TokenKeyError, match="authenticate"):
        ring.decrypt(kid, blob, aad_for("ws", "meta", "222"))


@pytest.mark.parametrize(("spec", "active", "needle"), [
    ("", None, "empty"),
    ("k1", None, "kid:base64key"),
    (f"k1:{base64.b64encode(b'short').decode()}", None, "32 bytes"),
    ("k1:!!!notbase64", None, "base64"),
    (f"k1:{K1},k2:{K2}", None, "active"),
    (f"k1:{K1}", "k9", "k9"),
    (f"k1:{K1},k1:{K2}", "k1", "twice"),
])
def test_bad_key_config_is_a_clear_error_without_key_bytes(spec: str, active: str | None, needle: str) -> None:
    with pytest.raises(TokenKeyError) as exc:
        Keyring.parse(spec, active)
    assert needle in str(exc.value) and K1 not in str(exc.value) and K2 not in str(exc.value)
