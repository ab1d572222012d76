"""The governance stores a config names, opened together: its database, the API keys (with the
secret that keys their hashes) and the audit log."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from router.config import Config, ConfigError
from router.governance.audit import AuditLog
from router.governance.db import Database
from router.governance.keys import KeyStore

KEY_SECRET_ENV = "CONTEXTFORGE_KEY_SECRET"


def key_secret(config: Config) -> bytes:
    """The secret keying API-key hashes: ``$CONTEXTFORGE_KEY_SECRET``, else the file
    ``governance.key_secret_path`` (created on first use for a SQLite store: one machine; a
    PostgreSQL store is shared by replicas, which must all read the same secret, so there it
    must be given). ``ConfigError`` naming what to set."""
    from_env = os.environ.get(KEY_SECRET_ENV, "")
    if from_env:
        if len(from_env) < 16:
            raise ConfigError(f"{KEY_SECRET_ENV}: give at least 16 characters")
        return from_env.encode()
    g = config.governance
    path = config.resolve(g.key_secret_path)
    if not path.exists():
        if not g.dsn.startswith("sqlite:"):
            raise ConfigError(f"governance.key_secret_path: {path} does not exist; with a "
                              f"shared (PostgreSQL) store every replica needs the same secret: "
                              f"set {KEY_SECRET_ENV} or put the secret in that file")
        _create_secret(path)
    text = path.read_text().strip()
    if len(text) < 16:
        raise ConfigError(f"governance.key_secret_path: {path} holds fewer than 16 characters")
    return text.encode()


def _create_secret(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: two processes starting at once end up with one secret
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


@dataclass
class Governance:
    """The database, keys and audit log of one config."""

    db: Database
    keys: KeyStore
    audit: AuditLog

    @classmethod
    def open(cls, config: Config) -> Governance:
        """Open (and create or upgrade) the stores ``config.governance`` names."""
        base = Path(config.base_dir) if config.base_dir else None
        try:
            db = Database(config.governance.dsn, base_dir=base)
        except ValueError as exc:
            raise ConfigError(f"governance.dsn: {exc}") from None
        return cls(db, KeyStore(db, key_secret(config)), AuditLog(db))

    def close(self) -> None:
        self.db.close()
