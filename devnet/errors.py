"""Devnet errors."""


class DevnetError(Exception):
    """The local devnet could not be started, reached or stopped."""


class DevnetNotRunning(DevnetError):
    """No devnet is running at the configured network file."""
