"""Real servers for the transporter tests: each a real process on a free 127.0.0.1 port, started by a
session-scoped fixture and torn down at the end.  Import the fixtures into a conftest.py to use them."""
