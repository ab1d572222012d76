"""Errors every layer of ``router`` may raise, in a module that imports nothing, so that the
config and the providers (which the config's deployment types come from) can both use them."""


class ConfigError(ValueError):
    """The config file is missing, malformed or inconsistent."""


class CacheUnavailable(RuntimeError):
    """The shared cache's store (Redis) did not answer: an invalidation or erasure that did not
    happen (lookups and writes never raise it to a request: they miss or are dropped)."""
