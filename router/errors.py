"""Errors every layer of ``router`` may raise, in a module that imports nothing, so that the
config and the providers (which the config's deployment types come from) can both use them."""


class ConfigError(ValueError):
    """The config file is missing, malformed or inconsistent."""
