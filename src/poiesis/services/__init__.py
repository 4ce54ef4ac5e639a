"""Use cases: each one turns a request into domain decisions and port calls."""
