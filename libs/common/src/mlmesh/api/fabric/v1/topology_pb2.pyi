import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Transport(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSPORT_UNSPECIFIED: _ClassVar[Transport]
    TRANSPORT_INFINIBAND: _ClassVar[Transport]
    TRANSPORT_ROCE: _ClassVar[Transport]
    TRANSPORT_TCP: _ClassVar[Transport]
TRANSPORT_UNSPECIFIED: Transport
TRANSPORT_INFINIBAND: Transport
TRANSPORT_ROCE: Transport
TRANSPORT_TCP: Transport

class TopologyNode(_message.Message):
    __slots__ = ("node_id", "nvlink_domain", "leaf_switch", "zone", "rack", "pool", "gpus")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    LEAF_SWITCH_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    RACK_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    nvlink_domain: str
    leaf_switch: str
    zone: str
    rack: str
    pool: _common_pb2.NodePool
    gpus: int
    def __init__(self, node_id: _Optional[str] = ..., nvlink_domain: _Optional[str] = ..., leaf_switch: _Optional[str] = ..., zone: _Optional[str] = ..., rack: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.NodePool, str]] = ..., gpus: _Optional[int] = ...) -> None: ...

class TopologyGroup(_message.Message):
    __slots__ = ("id", "level", "node_ids", "parent_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    level: _common_pb2.TopologyLevel
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    parent_id: str
    def __init__(self, id: _Optional[str] = ..., level: _Optional[_Union[_common_pb2.TopologyLevel, str]] = ..., node_ids: _Optional[_Iterable[str]] = ..., parent_id: _Optional[str] = ...) -> None: ...

class LevelDistance(_message.Message):
    __slots__ = ("level", "distance")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    level: _common_pb2.TopologyLevel
    distance: int
    def __init__(self, level: _Optional[_Union[_common_pb2.TopologyLevel, str]] = ..., distance: _Optional[int] = ...) -> None: ...

class NodePairDistance(_message.Message):
    __slots__ = ("node_a", "node_b", "level", "distance")
    NODE_A_FIELD_NUMBER: _ClassVar[int]
    NODE_B_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    node_a: str
    node_b: str
    level: _common_pb2.TopologyLevel
    distance: int
    def __init__(self, node_a: _Optional[str] = ..., node_b: _Optional[str] = ..., level: _Optional[_Union[_common_pb2.TopologyLevel, str]] = ..., distance: _Optional[int] = ...) -> None: ...

class Topology(_message.Message):
    __slots__ = ("nodes", "nvlink_domains", "switches", "zones", "distances", "pair_distances")
    NODES_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAINS_FIELD_NUMBER: _ClassVar[int]
    SWITCHES_FIELD_NUMBER: _ClassVar[int]
    ZONES_FIELD_NUMBER: _ClassVar[int]
    DISTANCES_FIELD_NUMBER: _ClassVar[int]
    PAIR_DISTANCES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[TopologyNode]
    nvlink_domains: _containers.RepeatedCompositeFieldContainer[TopologyGroup]
    switches: _containers.RepeatedCompositeFieldContainer[TopologyGroup]
    zones: _containers.RepeatedCompositeFieldContainer[TopologyGroup]
    distances: _containers.RepeatedCompositeFieldContainer[LevelDistance]
    pair_distances: _containers.RepeatedCompositeFieldContainer[NodePairDistance]
    def __init__(self, nodes: _Optional[_Iterable[_Union[TopologyNode, _Mapping]]] = ..., nvlink_domains: _Optional[_Iterable[_Union[TopologyGroup, _Mapping]]] = ..., switches: _Optional[_Iterable[_Union[TopologyGroup, _Mapping]]] = ..., zones: _Optional[_Iterable[_Union[TopologyGroup, _Mapping]]] = ..., distances: _Optional[_Iterable[_Union[LevelDistance, _Mapping]]] = ..., pair_distances: _Optional[_Iterable[_Union[NodePairDistance, _Mapping]]] = ...) -> None: ...

class NetworkProfile(_message.Message):
    __slots__ = ("transport", "link_bandwidth_bits_per_second", "round_trip_time", "bandwidth_delay_product_bytes", "nccl_env", "dscp", "traffic_class", "socket_buffer_bytes", "notes")
    class NcclEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    LINK_BANDWIDTH_BITS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ROUND_TRIP_TIME_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_DELAY_PRODUCT_BYTES_FIELD_NUMBER: _ClassVar[int]
    NCCL_ENV_FIELD_NUMBER: _ClassVar[int]
    DSCP_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_CLASS_FIELD_NUMBER: _ClassVar[int]
    SOCKET_BUFFER_BYTES_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    transport: Transport
    link_bandwidth_bits_per_second: int
    round_trip_time: _duration_pb2.Duration
    bandwidth_delay_product_bytes: int
    nccl_env: _containers.ScalarMap[str, str]
    dscp: int
    traffic_class: int
    socket_buffer_bytes: int
    notes: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, transport: _Optional[_Union[Transport, str]] = ..., link_bandwidth_bits_per_second: _Optional[int] = ..., round_trip_time: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bandwidth_delay_product_bytes: _Optional[int] = ..., nccl_env: _Optional[_Mapping[str, str]] = ..., dscp: _Optional[int] = ..., traffic_class: _Optional[int] = ..., socket_buffer_bytes: _Optional[int] = ..., notes: _Optional[_Iterable[str]] = ...) -> None: ...

class LinkBenchmark(_message.Message):
    __slots__ = ("node_a", "node_b", "backend", "message_size_bytes", "bus_bandwidth_bytes_per_second", "algorithm_bandwidth_bytes_per_second", "latency_microseconds", "iterations", "run_time", "error")
    NODE_A_FIELD_NUMBER: _ClassVar[int]
    NODE_B_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUS_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MICROSECONDS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    node_a: str
    node_b: str
    backend: str
    message_size_bytes: int
    bus_bandwidth_bytes_per_second: float
    algorithm_bandwidth_bytes_per_second: float
    latency_microseconds: float
    iterations: int
    run_time: _timestamp_pb2.Timestamp
    error: str
    def __init__(self, node_a: _Optional[str] = ..., node_b: _Optional[str] = ..., backend: _Optional[str] = ..., message_size_bytes: _Optional[int] = ..., bus_bandwidth_bytes_per_second: _Optional[float] = ..., algorithm_bandwidth_bytes_per_second: _Optional[float] = ..., latency_microseconds: _Optional[float] = ..., iterations: _Optional[int] = ..., run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...
