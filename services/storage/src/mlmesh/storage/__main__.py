"""`python -m mlmesh.storage`: run the storage service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.storage.app import register
from mlmesh.storage.settings import StorageSettings


def main() -> None:
    run_main(StorageSettings, register)


if __name__ == "__main__":
    main()
