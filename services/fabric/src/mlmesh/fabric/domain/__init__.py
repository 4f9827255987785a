"""Fabric policy as pure functions over plain data (no I/O): network tuning profiles."""
