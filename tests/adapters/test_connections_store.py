"""The connections table on a real, freshly migrated PostgreSQL database."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID

import psycopg
import pytest
from pydantic import ValidationError

from adapters import connections_store as store
from adapters.crypto import Keyring, generate_key
from pollers.status import status_rows
from schemas.migrate import downgrade, upgrade
from tests.integration.conftest import database, services  # noqa: F401  (fixtures)

WS = "7b0c5a0e-8a51-4d43-9a52-3c5f2f0e7a10"
OTHER_WS = "00000000-0000-4000-8000-000000000001"
K1, K2 = generate_key(), generate_key()


def meta(account: str = "111", ws: str = WS, token: str = "EAAsecrettoken1") -> store.NewConnection:
    return store.NewConnection(workspace_id=UUID(ws), provider="meta", account_id=account, display_name="Shop",
                               tokens={"access_token": token})


def test_tokens_are_stored_encrypted_and_read_back(database: str) -> None:  # noqa: F811
    ring = Keyring.parse(f"k1:{K1}", None)
    with psycopg.connect(database) as conn:
        store.add(conn, ring, meta())
        store.add(conn, ring, meta(ws=OTHER_WS, token="EAAothertoken2"))
        raw = conn.execute("SELECT token_key_id, token_ciphertext FROM connections").fetchall()
        assert {r[0] for r in raw} == {"k1"}
        assert all(b"EAA" not in bytes(r[1]) for r in raw)
        c = store.get(conn, ring, WS, "meta", "111")
        assert c is not None and c.tokens == {"access_token": "EAAsecrettoken1"} and c.status == "active"
        assert "EAAsecret" not in repr(c)
        assert store.get(conn, ring, OTHER_WS, "meta", "111").tokens["access_token"] == "EAAothertoken2"  # type: ignore[union-attr]
        rows = status_rows(conn, WS)
        assert len(rows) == 1 and "EAA" not in json.dumps(rows, default=str)


def test_rotation_reencrypts_every_row(database: str) -> None:  # noqa: F811
    old = Keyring.parse(f"k1:{K1}", None)
    with psycopg.connect(database) as conn:
        for a in ("1", "2", "3"):
            store.add(conn, old, meta(a))
        both = Keyring.parse(f"k1:{K1},k2:{K2}", "k2")
        assert store.reencrypt_all(conn, both) == 3
        assert store.reencrypt_all(conn, both) == 0
        only_new = Keyring.parse(f"k2:{K2}", None)
        assert [store.get(conn, only_new, WS, "meta", a).tokens["access_token"] for a in "123"] == ["EAAsecrettoken1"] * 3  # type: ignore[union-attr]


def test_status_and_due_scheduling(database: str) -> None:  # noqa: F811
    ring = Keyring.parse(f"k1:{K1}", None)
    now = datetime.now(UTC)
    with psycopg.connect(database) as conn:
        store.add(conn, ring, meta("1"))
        store.add(conn, ring, meta("2"))
        store.add(conn, ring, meta("3"))
        c1, c2, c3 = (store.get(conn, ring, WS, "meta", a) for a in "123")
        assert c1 and c2 and c3
        store.record_failure(conn, c2, now, "needs_reauth", "meta error code 190: expired")
        store.record_failure(conn, c3, now, "throttled", "code 17", retry_after_s=600)
        store.record_success(conn, c1, now, "hot", now + timedelta(minutes=15), calls=4)
        assert [c.account_id for c in store.due(conn, ring, now + timedelta(seconds=1), "hot")] == []
        assert {c.account_id for c in store.due(conn, ring, now + timedelta(minutes=16), "hot")} == {"1", "3"}
        assert [c.account_id for c in store.due(conn, ring, now + timedelta(minutes=11), "hot")] == ["3"]
        st = {r["account_id"]: r for r in status_rows(conn, WS)}
        assert st["2"]["status"] == "needs_reauth" and "190" in st["2"]["last_error"]
        assert st["1"]["api_calls_today"] == 4 and st["1"]["last_error"] is None
        store.add(conn, ring, meta("2", token="EAAnewtoken99"))  # re-connecting clears needs_reauth
        assert store.get(conn, ring, WS, "meta", "2").status == "active"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", [
    {"provider": "tiktok"}, {"account_id": "act_"}, {"account_id": "act_11x"}, {"account_id": "111-222"},
    {"account_id": "ACT_111"}, {"account_id": " 111"}, {"account_id": "1" * 33}, {"tokens": {}},
    {"tokens": {"access_token": "short"}},
    {"provider": "google", "account_id": "act_1234567890",
     "tokens": {"developer_token": "dev1", "access_token": "ya29.token"}},
    {"provider": "google", "account_id": "123-4567-890",
     "tokens": {"developer_token": "dev1", "access_token": "ya29.token"}},
    {"provider": "google", "tokens": {"developer_token": "dev1", "refresh_token": "r"}},
    {"login_customer_id": "123"},
])
def test_bad_input_is_refused_without_echoing_tokens(bad: dict[str, object]) -> None:
    args = {"workspace_id": WS, "provider": "meta", "account_id": "111", "tokens": {"access_token": "EAAsecrettoken1"}, **bad}
    with pytest.raises(ValidationError) as exc:
        store.NewConnection.model_validate(args)
    assert "EAAsecret" not in store.describe(exc.value)


@pytest.mark.parametrize(("provider", "given", "stored"), [
    ("meta", "act_123", "123"), ("meta", "123", "123"),
    ("google", "123-456-7890", "1234567890"), ("google", "1234567890", "1234567890"),
])
def test_the_platforms_own_spelling_is_accepted_and_stored_canonical(provider: str, given: str, stored: str) -> None:
    """The README's ``act_123`` and Google's ``123-456-7890`` are what people copy from the
    platforms' own screens; one canonical form is stored (the form snapshots carry)."""
    tokens = {"access_token": "EAAsecrettoken1"} if provider == "meta" else {
        "developer_token": "dev1", "access_token": "ya29.token"}
    login = "999-000-1111" if provider == "google" else None
    c = store.NewConnection.model_validate({"workspace_id": WS, "provider": provider, "account_id": given,
                                            "login_customer_id": login, "tokens": tokens})
    assert c.account_id == stored
    assert c.login_customer_id == ("9990001111" if provider == "google" else None)


def test_migration_downgrade_drops_what_it_creates(database: str) -> None:  # noqa: F811
    sa = database.replace("postgresql://", "postgresql+psycopg://", 1)
    q = "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('connections', 'entities')"
    with psycopg.connect(database) as conn:
        assert conn.execute(q).fetchone() == (2,)
    downgrade(sa, "0001")
    with psycopg.connect(database) as conn:
        assert conn.execute(q).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'metrics_daily'").fetchone() == (1,)
    upgrade(sa, "auto")
    with psycopg.connect(database) as conn:
        assert conn.execute(q).fetchone() == (2,)


def test_undecryptable_token_marks_only_that_connection(database: str) -> None:  # noqa: F811
    old, new = Keyring.parse(f"k1:{K1}", None), Keyring.parse(f"k2:{K2}", None)
    with psycopg.connect(database, autocommit=True) as conn:
        store.add(conn, old, meta("1"))
        store.add(conn, new, meta("2"))
        now = datetime.now(UTC) + timedelta(seconds=1)
        assert [c.account_id for c in store.due(conn, new, now, "hot")] == ["2"]
        st = {r["account_id"]: r for r in status_rows(conn, WS)}
    assert st["1"]["status"] == "error" and "'k1'" in st["1"]["last_error"] and st["2"]["status"] == "active"
    assert st["1"]["throttled_until"] > now + timedelta(minutes=59)
