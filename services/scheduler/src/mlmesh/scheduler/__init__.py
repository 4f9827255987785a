"""mlmesh scheduler service."""
