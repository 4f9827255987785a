"""`python -m mlmesh.trainer`: run the trainer service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.trainer.app import register
from mlmesh.trainer.settings import TrainerSettings


def main() -> None:
    run_main(TrainerSettings, register)


if __name__ == "__main__":
    main()
