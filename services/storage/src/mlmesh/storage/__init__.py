"""mlmesh storage service."""
