"""Identity tests reuse the integration fixtures: real anvil + nats-server, real homes."""

from tests.integration.conftest import network, people  # noqa: F401
