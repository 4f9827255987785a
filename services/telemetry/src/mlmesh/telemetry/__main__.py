"""`python -m mlmesh.telemetry`: run the telemetry service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.telemetry.app import register
from mlmesh.telemetry.settings import TelemetrySettings


def main() -> None:
    run_main(TelemetrySettings, register)


if __name__ == "__main__":
    main()
