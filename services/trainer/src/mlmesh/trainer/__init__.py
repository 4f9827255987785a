"""mlmesh trainer service."""
