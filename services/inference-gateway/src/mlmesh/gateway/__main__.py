"""`python -m mlmesh.gateway`: run the inference-gateway service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.gateway.app import register
from mlmesh.gateway.settings import GatewaySettings


def main() -> None:
    run_main(GatewaySettings, register)


if __name__ == "__main__":
    main()
