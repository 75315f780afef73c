"""The conformance suite: what every backend must pass (see README.md)."""
