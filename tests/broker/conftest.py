from tests.servers.nats import nats_server  # noqa: F401  (the fixture, for the tests here)
