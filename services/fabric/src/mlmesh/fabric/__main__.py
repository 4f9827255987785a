"""`python -m mlmesh.fabric` runs the fabric service; `python -m mlmesh.fabric agent` (or
`mlmesh-fabric agent`) runs the node agent on this host."""

import sys

from mlmesh.common.grpc_server import run_main


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["agent"]:
        from mlmesh.fabric.agent.runner import register as agent_register
        from mlmesh.fabric.settings import AgentSettings

        run_main(AgentSettings, agent_register)
    elif not args:
        from mlmesh.fabric.app import register
        from mlmesh.fabric.settings import FabricSettings

        run_main(FabricSettings, register)
    else:
        print(f"usage: mlmesh-fabric [agent]  (unknown argument {args[0]!r})", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
