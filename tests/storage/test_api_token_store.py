"""API tokens are stored alike on SQLite and PostgreSQL: found by their HMAC only, listed
per owner, revoked once, and live only while unrevoked, unexpired and their owner enabled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from conftest import Backend
from nixfleet.core.apitokens import scope_from
from nixfleet.core.errors import NotFound
from nixfleet.core.roles import Role
from nixfleet.storage import api_tokens as store
from nixfleet.storage import users
from nixfleet.storage.api_tokens import ApiToken
from nixfleet.storage.db import Database
from nixfleet.storage.migrate import upgrade

NOW = 1_760_000_000.25


@pytest.fixture
async def db(backend: Backend) -> AsyncIterator[Database]:
    await asyncio.to_thread(upgrade, backend.url)
    database = Database(backend.url)
    await users.add(database, "ada", "argon2-hash", Role.ADMIN)
    await users.add(database, "otto", "argon2-hash", Role.OPERATOR)
    yield database
    await database.close()


def _token(tid: str, owner: str | None, expires: float = NOW + 3600) -> ApiToken:
    scope = scope_from(["web-01"], "role=web", ["plan"])
    return ApiToken(tid, f"n-{tid}", owner, "ada", Role.OPERATOR, scope, NOW, expires,
                    None, None, None)  # fmt: skip


async def test_a_token_is_found_by_its_hash_alone_with_its_scope_intact(db):
    await store.add(db, _token("t1", "otto"), "h" * 64)
    found = await store.by_hash(db, "h" * 64)
    assert found is not None and found.id == "t1" and found.actor == "token:t1 of otto"
    assert found.scope == scope_from(["web-01"], "role=web", ["plan"])
    assert await store.by_hash(db, "g" * 64) is None
    assert "token_hash" not in found.public()


async def test_tokens_are_listed_per_owner_and_revoked_only_by_their_owner(db):
    await store.add(db, _token("t1", "otto"), "a" * 64)
    await store.add(db, _token("t2", None), "b" * 64)
    assert [t.id for t in await store.listed(db, "otto")] == ["t1"]
    assert {t.id for t in await store.listed(db, None, everyone=True)} == {"t1", "t2"}
    with pytest.raises(NotFound):
        await store.revoke(db, "t2", NOW, owner="otto")
    revoked = await store.revoke(db, "t1", NOW + 1, owner="otto")
    again = await store.revoke(db, "t1", NOW + 99)
    assert revoked.revoked_at == again.revoked_at == NOW + 1


async def test_only_unrevoked_unexpired_tokens_of_enabled_owners_are_live(db):
    await store.add(db, _token("ok", "otto"), "a" * 64)
    await store.add(db, _token("svc", None), "b" * 64)
    await store.add(db, _token("old", "otto", expires=NOW - 1), "c" * 64)
    await store.add(db, _token("gone", "otto"), "d" * 64)
    await store.revoke(db, "gone", NOW)
    assert await store.live_of(db, {"ok", "svc", "old", "gone", "nope"}, NOW) == {"ok", "svc"}
    await users.change(db, "otto", disabled=True)
    assert await store.live_of(db, {"ok", "svc"}, NOW) == {"svc"}
    await store.note_use(db, "svc", NOW, "203.0.113.9")
    used = await store.get(db, "svc")
    assert (used.last_used_at, used.last_used_from) == (NOW, "203.0.113.9")
