"""`mlmesh nodes list|get|cordon|drain|uncordon|bench`: the fabric's view of the hardware."""

from __future__ import annotations

from typing import Annotated

import typer

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.fabric.v1 import fabric_service_pb2 as api
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.cli.common import (
    EndpointOpt,
    JsonOpt,
    TimeoutOpt,
    age,
    enum_short,
    fabric,
    print_message,
    to_dict,
)
from mlmesh.cli.output import CliError, console, print_json, print_table
from mlmesh.common.quantities import fmt_bytes, fmt_cpu
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S
from mlmesh.sdk.jobspec import parse_memory

nodes_app = typer.Typer(
    help="Nodes: inventory, health, cordon/drain, link benchmarks.", no_args_is_help=True, rich_markup_mode=None
)
NodeArg = Annotated[str, typer.Argument(help="Node id.", show_default=False)]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why; recorded on the node and in its event.")]


def _state(n: node_pb2.Node) -> str:
    return enum_short(node_pb2.NodeState, n.state, "NODE_STATE_")


def _gpus(n: node_pb2.Node) -> str:
    gpus = [d for d in n.devices if d.kind == node_pb2.DEVICE_KIND_GPU]
    return f"{len(gpus)}x {gpus[0].model}" if gpus else "0"


def _table(nodes) -> None:
    print_table(
        "nodes",
        ["id", "state", "gpus", "cpu", "memory", "zone", "switch", "nvlink", "pool", "heartbeat", "reason"],
        [
            (
                n.id,
                _state(n),
                _gpus(n),
                fmt_cpu(n.capacity.cpu_millis),
                fmt_bytes(n.capacity.memory_bytes),
                n.labels.zone,
                n.labels.leaf_switch,
                n.labels.nvlink_domain,
                enum_short(common_pb2.NodePool, n.labels.pool, "NODE_POOL_").lower()
                + (" spot" if n.labels.spot else ""),
                age(n.last_heartbeat_time) if n.HasField("last_heartbeat_time") else "",
                n.state_reason,
            )
            for n in nodes
        ],
    )


@nodes_app.command("list")
def list_nodes(
    state: Annotated[list[str] | None, typer.Option("--state", help="ready, not_ready, cordoned, draining.")] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """List nodes with their state, capacity and labels."""
    states = []
    for s in state or []:
        try:
            states.append(node_pb2.NodeState.Value("NODE_STATE_" + s.upper()))
        except ValueError:
            raise CliError(
                f"--state: unknown state {s!r}", hint="ready, not_ready, cordoned, draining", exit_code=2
            ) from None
    nodes: list[node_pb2.Node] = []
    request = api.ListNodesRequest(states=states, page_size=1000)
    with fabric(endpoint, timeout) as client:
        while True:
            page = client.call(client.stub.ListNodes, request)
            nodes.extend(page.nodes)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    if json_output:
        print_json([to_dict(n) for n in nodes])
    else:
        _table(nodes)


@nodes_app.command("get")
def get_node(
    node_id: NodeArg,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Show one node: devices, NICs, utilization."""
    with fabric(endpoint, timeout) as client:
        node = client.call(client.stub.GetNode, api.GetNodeRequest(node_id=node_id)).node
    if json_output:
        print_message(node)
        return
    _table([node])
    for d in node.devices:
        peers = ", ".join(p.peer_device_id or p.peer_pci_bus_id for p in d.nvlink_peers)
        console.print(f"  {d.id}  {d.model}  {fmt_bytes(d.memory_bytes)}  numa {d.numa_node}  nvlink: {peers or '-'}")
    for nic in node.nics:
        kind = enum_short(node_pb2.NicKind, nic.kind, "NIC_KIND_").lower()
        console.print(f"  {nic.name}  {kind}  {nic.speed_mbps} Mb/s  {'up' if nic.link_up else 'down'}")


def _admin(action: str, node_id: str, reason: str, json_output: bool, endpoint, timeout) -> None:
    with fabric(endpoint, timeout) as client:
        if action == "cordon":
            node = client.call(client.stub.Cordon, api.CordonRequest(node_id=node_id, reason=reason)).node
        elif action == "drain":
            node = client.call(client.stub.Drain, api.DrainRequest(node_id=node_id, reason=reason)).node
        else:
            node = client.call(client.stub.Uncordon, api.UncordonRequest(node_id=node_id)).node
    if json_output:
        print_message(node)
    else:
        console.print(f"node {node.id} is {_state(node).lower()}")


@nodes_app.command("cordon")
def cordon(
    node_id: NodeArg,
    reason: ReasonOpt = "",
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Stop placing new work on a node (admin)."""
    _admin("cordon", node_id, reason, json_output, endpoint, timeout)


@nodes_app.command("drain")
def drain(
    node_id: NodeArg,
    reason: ReasonOpt = "",
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Cordon a node and move its jobs elsewhere (checkpoint, then stop) (admin)."""
    _admin("drain", node_id, reason, json_output, endpoint, timeout)


@nodes_app.command("uncordon")
def uncordon(
    node_id: NodeArg,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Let the scheduler place work on a node again (admin)."""
    _admin("uncordon", node_id, "", json_output, endpoint, timeout)


@nodes_app.command("bench")
def bench(
    node_ids: Annotated[
        list[str], typer.Argument(help="Two or more nodes; every pair is measured.", show_default=False)
    ],
    size: Annotated[str, typer.Option("--size", help="All-reduce message size, e.g. 64Mi.")] = "64Mi",
    iterations: Annotated[int, typer.Option("--iterations", help="Timed all-reduces per link.", min=1)] = 20,
    backend: Annotated[
        str, typer.Option("--backend", help="gloo or nccl; default nccl when both nodes have GPUs.")
    ] = "",
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Measure bus bandwidth and latency between nodes with a real all-reduce (admin)."""
    try:
        size_bytes = parse_memory(size)
    except ValueError as exc:
        raise CliError(f"--size: {exc}", exit_code=2) from None
    request = api.BenchmarkLinksRequest(
        node_ids=node_ids, message_size_bytes=size_bytes, iterations=iterations, backend=backend
    )
    with (
        fabric(endpoint, timeout) as client,
        console.status(f"measuring {len(node_ids) * (len(node_ids) - 1) // 2} link(s)…"),
    ):
        results = client.call(client.stub.BenchmarkLinks, request).results
    if json_output:
        print_json([to_dict(r) for r in results])
        return
    print_table(
        "links",
        ["node a", "node b", "backend", "size", "bus bw GB/s", "alg bw GB/s", "latency µs", "error"],
        [
            (
                r.node_a,
                r.node_b,
                r.backend,
                fmt_bytes(r.message_size_bytes),
                f"{r.bus_bandwidth_bytes_per_second / 1e9:.3f}",
                f"{r.algorithm_bandwidth_bytes_per_second / 1e9:.3f}",
                f"{r.latency_microseconds:.0f}",
                r.error,
            )
            for r in results
        ],
    )
    if any(r.error for r in results):
        raise CliError("some links failed", hint="see the error column; the agents keep the worker logs")


def register(app: typer.Typer) -> None:
    app.add_typer(nodes_app, name="nodes")
