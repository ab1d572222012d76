"""The Redis client every shared feature opens from ``redis`` in the config (``RedisConfig``).

Why one factory: the settings that keep a request from waiting on Redis belong to every user
of it (the response cache today; rate limits and budgets next), not to each.

- Commands time out after ``redis.timeout_s``; a connection refused fails at once.
- One immediate retry, on a connection error only: after a Redis restart the pool's sockets
  are dead and the first command on each fails; the retry opens a fresh one. Timeouts are not
  retried (that would double the wait).
- A blocking reader (``XREAD BLOCK``) needs a read timeout longer than its block: ``blocking_s``.

Nothing connects until the first command, so building a client costs nothing and may happen
off the event loop; the connections belong to the loop that first uses them.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router.config import RedisConfig
from router.secrets import mask_url


def connect(config: RedisConfig, *, blocking_s: float = 0.0) -> Redis:
    """A client of ``config.url`` (not yet connected). ``blocking_s``: the longest a command
    of this client blocks on purpose (its read timeout is that plus ``timeout_s``)."""
    if not config.url:
        raise ValueError("redis.url is empty: the embedded default runs without Redis")
    return Redis.from_url(config.url, socket_timeout=config.timeout_s + blocking_s,
                          socket_connect_timeout=config.timeout_s,
                          retry=Retry(NoBackoff(), 1), retry_on_timeout=False,
                          client_name="contextforge")


def shown(config: RedisConfig) -> str:
    """The URL as logs and admin answers show it (a password masked)."""
    return mask_url(config.url)
