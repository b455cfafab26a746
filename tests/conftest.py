"""Shared fixtures. Servers are started on free loopback ports and stopped by pid."""

pytest_plugins = ["tests.fixtures.chain", "tests.fixtures.nats"]
