import pytest


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.fixture()
async def redis_clients():
    """Two clients of the local Redis server (as two replicas would hold)."""
    import redis.asyncio as redis

    clients = [redis.Redis(host="127.0.0.1", port=6379) for _ in range(2)]
    yield clients
    for c in clients:
        await c.aclose()
