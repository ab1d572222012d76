"""API keys: shown once, stored as a keyed hash, rejected for every reason they should be."""

from __future__ import annotations

import pytest

from router.governance.keys import KeyRejected, KeyStore, split_key

SECRET = b"k" * 32


@pytest.fixture()
def clock():
    return [1000.0]


@pytest.fixture()
def keys(governance_db, clock):
    return KeyStore(governance_db, SECRET, clock=lambda: clock[0])


def test_a_key_is_shown_once_and_only_its_keyed_hash_is_stored(keys, governance_db):
    key, presented = keys.create("acme", name="ci", project="web", user_id="ada",
                                 models=["gpt-4o"], role="member")
    assert presented.startswith(f"cf_{key.id}_") and split_key(presented)[0] == key.id
    assert keys.verify(presented) == key
    stored = governance_db.query("SELECT * FROM api_keys")
    assert presented not in repr(stored) and presented.split("_", 2)[2] not in repr(stored)
    # The same database read with another server secret verifies nothing.
    with pytest.raises(KeyRejected) as err:
        KeyStore(governance_db, b"x" * 32).verify(presented)
    assert err.value.reason == "wrong"


@pytest.mark.parametrize("forge, reason", [
    (lambda p: p[:-1] + ("A" if p[-1] != "A" else "B"), "wrong"),
    (lambda p: "cf_" + "a" * 12 + "_" + p.split("_", 2)[2], "unknown"),
    (lambda p: "sk-" + p, "malformed"),
    (lambda p: "", "malformed"),
    (lambda p: p[:15], "malformed"),
])
def test_forged_keys_are_rejected(keys, forge, reason):
    _, presented = keys.create("acme")
    with pytest.raises(KeyRejected) as err:
        keys.verify(forge(presented))
    assert err.value.reason == reason


def test_expiry_revocation_and_rotation_with_overlap(keys, clock):
    key, presented = keys.create("acme", expires=2000.0)
    clock[0] = 2000.0
    with pytest.raises(KeyRejected, match="expired"):
        keys.verify(presented)
    key, presented = keys.create("acme")
    new, fresh = keys.rotate(key.id, overlap_s=60)
    assert keys.verify(presented).replaced_by == new.id  # both work in the overlap
    assert keys.verify(fresh).id == new.id
    clock[0] += 61
    with pytest.raises(KeyRejected, match="rotated"):
        keys.verify(presented)
    revoked = keys.revoke(new.id)
    assert revoked.revoked == clock[0]
    with pytest.raises(KeyRejected, match="revoked"):
        keys.verify(fresh)
    with pytest.raises(KeyError):
        keys.revoke("nosuchkey123")
    with pytest.raises(KeyError):
        keys.rotate(new.id)  # no longer active


def test_list_by_org_hides_inactive_keys_unless_asked(keys, clock):
    keys.create("acme", name="a")
    clock[0] += 1
    b, _ = keys.create("acme", name="b")
    keys.create("globex", name="c")
    keys.revoke(b.id)
    assert [k.name for k in keys.list("acme")] == ["a"]
    assert [k.name for k in keys.list("acme", include_inactive=True)] == ["a", "b"]
    assert {k.org for k in keys.list()} == {"acme", "globex"}


def test_bad_attributes_are_refused(keys):
    with pytest.raises(ValueError, match="role"):
        keys.create("acme", role="root")
    with pytest.raises(ValueError, match="organisation"):
        keys.create("")
    with pytest.raises(ValueError, match=r"ips\[1\]: 'ten' is not an IP address"):
        keys.create("acme", ips=["10.0.0.0/8", "ten"])  # else a 500 on each of its requests
    assert keys.create("acme", ips=["10.0.0.1/8"])[0].ips == ["10.0.0.1/8"]  # as ever
    with pytest.raises(ValueError, match="16 bytes"):
        KeyStore(keys.db, b"short")
