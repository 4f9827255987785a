"""mlmesh inference-gateway service."""
