"""`python -m mlmesh.scheduler`: run the scheduler service."""

from mlmesh.common.grpc_server import run_main
from mlmesh.scheduler.app import register
from mlmesh.scheduler.settings import SchedulerSettings


def main() -> None:
    run_main(SchedulerSettings, register)


if __name__ == "__main__":
    main()
