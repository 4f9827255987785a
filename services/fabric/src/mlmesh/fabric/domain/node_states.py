"""Node state rules. Ready, NotReady, Cordoned, Draining.

Cordon and drain are admin decisions and survive a node's death and re-registration (a flag on
the node's labels); NotReady is the fabric's own verdict and only re-registration ends it, so a
late heartbeat from a node that was declared dead can never bring it (or its old allocations) back.
"""

from __future__ import annotations

from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.common.errors import FailedPrecondition

N = node_pb2.NodeState
READY, NOT_READY, CORDONED, DRAINING = (
    N.NODE_STATE_READY,
    N.NODE_STATE_NOT_READY,
    N.NODE_STATE_CORDONED,
    N.NODE_STATE_DRAINING,
)
ADMIN_HOLD = "mlmesh.io/unschedulable"  # in labels.extra: "cordoned" | "draining"


def state_name(state: int) -> str:
    return N.Name(state).removeprefix("NODE_STATE_")


def live(state: int) -> bool:
    """States whose heartbeats count (everything but NotReady)."""
    return state in (READY, CORDONED, DRAINING)


def after_registration(node: node_pb2.Node) -> int:
    hold = node.labels.extra.get(ADMIN_HOLD)
    return {"cordoned": CORDONED, "draining": DRAINING}.get(hold, READY)


def admin_transition(node: node_pb2.Node, action: str) -> int:
    """The state after cordon / drain / uncordon; the hold flag is set or cleared on the node."""
    if action == "uncordon":
        node.labels.extra.pop(ADMIN_HOLD, None)
        return READY if node.state != NOT_READY else NOT_READY
    if action not in ("cordon", "drain"):
        raise FailedPrecondition(f"unknown action {action}")
    node.labels.extra[ADMIN_HOLD] = "cordoned" if action == "cordon" else "draining"
    if node.state == NOT_READY:
        return NOT_READY  # stays dead; the hold applies when it re-registers
    return CORDONED if action == "cordon" else DRAINING
