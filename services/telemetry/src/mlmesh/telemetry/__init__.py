"""mlmesh telemetry service."""
