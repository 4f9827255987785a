"""mlmesh fabric service."""
