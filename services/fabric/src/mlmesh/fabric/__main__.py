"""`python -m mlmesh.fabric`: run the fabric service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.fabric.app import register
from mlmesh.fabric.settings import FabricSettings


def main() -> None:
    run_main(FabricSettings, register)


if __name__ == "__main__":
    main()
