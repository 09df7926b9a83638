"""Exceptions that the CLI and the dashboard turn into clear messages (never tracebacks)."""


class GenesisError(Exception):
    """Base class for errors caused by user input: the message says what was wrong and what to do."""


class DataError(GenesisError):
    """A data or geometry file is missing, unreadable or does not follow the schema."""


class ConfigError(GenesisError):
    """A configuration has unknown keys, wrong types or invalid values."""


class CheckpointError(GenesisError):
    """A checkpoint is corrupted, of the wrong kind, or would need code to load."""
