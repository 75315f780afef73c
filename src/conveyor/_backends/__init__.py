"""Concrete backends. Each one implements :class:`conveyor.abc.Backend`; the front end never imports them."""
