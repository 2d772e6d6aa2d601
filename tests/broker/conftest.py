from tests.broker.test_broker import _no_leftovers  # noqa: F401  (every test here: no process left running)
from tests.servers.nats import nats_server  # noqa: F401  (the fixture, for the tests here)
