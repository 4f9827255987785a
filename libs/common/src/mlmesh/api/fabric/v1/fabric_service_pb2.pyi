import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from mlmesh.api.fabric.v1 import node_pb2 as _node_pb2
from mlmesh.api.fabric.v1 import topology_pb2 as _topology_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("node", "incarnation", "heartbeat_interval")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    incarnation: int
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ..., incarnation: _Optional[int] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "incarnation", "utilization", "devices")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    incarnation: int
    utilization: _node_pb2.NodeUtilization
    devices: _containers.RepeatedCompositeFieldContainer[_node_pb2.Device]
    def __init__(self, node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., utilization: _Optional[_Union[_node_pb2.NodeUtilization, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[_node_pb2.Device, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("state", "reregister_required")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REREGISTER_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    state: _node_pb2.NodeState
    reregister_required: bool
    def __init__(self, state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., reregister_required: _Optional[bool] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class GetNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("states", "pool", "label_selector", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[_node_pb2.NodeState]
    pool: _common_pb2.NodePool
    label_selector: _common_pb2.LabelSelector
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[_node_pb2.NodeState, str]]] = ..., pool: _Optional[_Union[_common_pb2.NodePool, str]] = ..., label_selector: _Optional[_Union[_common_pb2.LabelSelector, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes", "next_page_token")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_node_pb2.Node]
    next_page_token: str
    def __init__(self, nodes: _Optional[_Iterable[_Union[_node_pb2.Node, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CordonRequest(_message.Message):
    __slots__ = ("node_id", "reason")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CordonResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("node_id", "reason", "grace_period")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    reason: str
    grace_period: _duration_pb2.Duration
    def __init__(self, node_id: _Optional[str] = ..., reason: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class UncordonRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class UncordonResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: _node_pb2.Node
    def __init__(self, node: _Optional[_Union[_node_pb2.Node, _Mapping]] = ...) -> None: ...

class GetTopologyRequest(_message.Message):
    __slots__ = ("node_ids", "include_pair_distances")
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PAIR_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    include_pair_distances: bool
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ..., include_pair_distances: _Optional[bool] = ...) -> None: ...

class GetTopologyResponse(_message.Message):
    __slots__ = ("topology",)
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    topology: _topology_pb2.Topology
    def __init__(self, topology: _Optional[_Union[_topology_pb2.Topology, _Mapping]] = ...) -> None: ...

class NodePair(_message.Message):
    __slots__ = ("node_a", "node_b")
    NODE_A_FIELD_NUMBER: _ClassVar[int]
    NODE_B_FIELD_NUMBER: _ClassVar[int]
    node_a: str
    node_b: str
    def __init__(self, node_a: _Optional[str] = ..., node_b: _Optional[str] = ...) -> None: ...

class GetNetworkProfileRequest(_message.Message):
    __slots__ = ("node_pair", "pool")
    NODE_PAIR_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    node_pair: NodePair
    pool: _common_pb2.NodePool
    def __init__(self, node_pair: _Optional[_Union[NodePair, _Mapping]] = ..., pool: _Optional[_Union[_common_pb2.NodePool, str]] = ...) -> None: ...

class GetNetworkProfileResponse(_message.Message):
    __slots__ = ("profile",)
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    profile: _topology_pb2.NetworkProfile
    def __init__(self, profile: _Optional[_Union[_topology_pb2.NetworkProfile, _Mapping]] = ...) -> None: ...

class BenchmarkLinksRequest(_message.Message):
    __slots__ = ("pairs", "node_ids", "message_size_bytes", "iterations", "backend")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[NodePair]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    message_size_bytes: int
    iterations: int
    backend: str
    def __init__(self, pairs: _Optional[_Iterable[_Union[NodePair, _Mapping]]] = ..., node_ids: _Optional[_Iterable[str]] = ..., message_size_bytes: _Optional[int] = ..., iterations: _Optional[int] = ..., backend: _Optional[str] = ...) -> None: ...

class BenchmarkLinksResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_topology_pb2.LinkBenchmark]
    def __init__(self, results: _Optional[_Iterable[_Union[_topology_pb2.LinkBenchmark, _Mapping]]] = ...) -> None: ...
