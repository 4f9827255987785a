"""Pure telemetry logic: aggregates, alert rules and their evaluation."""
