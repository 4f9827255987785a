"""Pure fabric logic: node states, liveness, topology and network tuning."""
