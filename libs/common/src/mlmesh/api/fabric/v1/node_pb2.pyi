import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    NODE_STATE_READY: _ClassVar[NodeState]
    NODE_STATE_NOT_READY: _ClassVar[NodeState]
    NODE_STATE_CORDONED: _ClassVar[NodeState]
    NODE_STATE_DRAINING: _ClassVar[NodeState]

class DeviceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KIND_UNSPECIFIED: _ClassVar[DeviceKind]
    DEVICE_KIND_GPU: _ClassVar[DeviceKind]

class NicKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NIC_KIND_UNSPECIFIED: _ClassVar[NicKind]
    NIC_KIND_INFINIBAND: _ClassVar[NicKind]
    NIC_KIND_ROCE: _ClassVar[NicKind]
    NIC_KIND_ETHERNET: _ClassVar[NicKind]
NODE_STATE_UNSPECIFIED: NodeState
NODE_STATE_READY: NodeState
NODE_STATE_NOT_READY: NodeState
NODE_STATE_CORDONED: NodeState
NODE_STATE_DRAINING: NodeState
DEVICE_KIND_UNSPECIFIED: DeviceKind
DEVICE_KIND_GPU: DeviceKind
NIC_KIND_UNSPECIFIED: NicKind
NIC_KIND_INFINIBAND: NicKind
NIC_KIND_ROCE: NicKind
NIC_KIND_ETHERNET: NicKind

class MigInstance(_message.Message):
    __slots__ = ("uuid", "profile", "memory_bytes", "gpu_instance_id", "compute_instance_id")
    UUID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    uuid: str
    profile: str
    memory_bytes: int
    gpu_instance_id: int
    compute_instance_id: int
    def __init__(self, uuid: _Optional[str] = ..., profile: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., gpu_instance_id: _Optional[int] = ..., compute_instance_id: _Optional[int] = ...) -> None: ...

class NvLinkPeer(_message.Message):
    __slots__ = ("peer_device_id", "peer_pci_bus_id", "link_count", "bandwidth_bytes_per_second")
    PEER_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_COUNT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    peer_device_id: str
    peer_pci_bus_id: str
    link_count: int
    bandwidth_bytes_per_second: int
    def __init__(self, peer_device_id: _Optional[str] = ..., peer_pci_bus_id: _Optional[str] = ..., link_count: _Optional[int] = ..., bandwidth_bytes_per_second: _Optional[int] = ...) -> None: ...

class DeviceHealth(_message.Message):
    __slots__ = ("healthy", "ecc_corrected_errors", "ecc_uncorrected_errors", "recent_xid_errors", "message")
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    ECC_CORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ECC_UNCORRECTED_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RECENT_XID_ERRORS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    healthy: bool
    ecc_corrected_errors: int
    ecc_uncorrected_errors: int
    recent_xid_errors: _containers.RepeatedScalarFieldContainer[int]
    message: str
    def __init__(self, healthy: _Optional[bool] = ..., ecc_corrected_errors: _Optional[int] = ..., ecc_uncorrected_errors: _Optional[int] = ..., recent_xid_errors: _Optional[_Iterable[int]] = ..., message: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "kind", "index", "model", "memory_bytes", "pci_bus_id", "numa_node", "compute_capability", "mig_instances", "nvlink_peers", "health")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODE_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    MIG_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    NVLINK_PEERS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: DeviceKind
    index: int
    model: str
    memory_bytes: int
    pci_bus_id: str
    numa_node: int
    compute_capability: str
    mig_instances: _containers.RepeatedCompositeFieldContainer[MigInstance]
    nvlink_peers: _containers.RepeatedCompositeFieldContainer[NvLinkPeer]
    health: DeviceHealth
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[DeviceKind, str]] = ..., index: _Optional[int] = ..., model: _Optional[str] = ..., memory_bytes: _Optional[int] = ..., pci_bus_id: _Optional[str] = ..., numa_node: _Optional[int] = ..., compute_capability: _Optional[str] = ..., mig_instances: _Optional[_Iterable[_Union[MigInstance, _Mapping]]] = ..., nvlink_peers: _Optional[_Iterable[_Union[NvLinkPeer, _Mapping]]] = ..., health: _Optional[_Union[DeviceHealth, _Mapping]] = ...) -> None: ...

class Nic(_message.Message):
    __slots__ = ("name", "kind", "rdma_device", "port", "speed_mbps", "link_up", "mtu_bytes", "addresses", "numa_node", "pci_bus_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RDMA_DEVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    SPEED_MBPS_FIELD_NUMBER: _ClassVar[int]
    LINK_UP_FIELD_NUMBER: _ClassVar[int]
    MTU_BYTES_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODE_FIELD_NUMBER: _ClassVar[int]
    PCI_BUS_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: NicKind
    rdma_device: str
    port: int
    speed_mbps: int
    link_up: bool
    mtu_bytes: int
    addresses: _containers.RepeatedScalarFieldContainer[str]
    numa_node: int
    pci_bus_id: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[NicKind, str]] = ..., rdma_device: _Optional[str] = ..., port: _Optional[int] = ..., speed_mbps: _Optional[int] = ..., link_up: _Optional[bool] = ..., mtu_bytes: _Optional[int] = ..., addresses: _Optional[_Iterable[str]] = ..., numa_node: _Optional[int] = ..., pci_bus_id: _Optional[str] = ...) -> None: ...

class NodeLabels(_message.Message):
    __slots__ = ("rack", "leaf_switch", "zone", "pool", "spot", "nvlink_domain", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RACK_FIELD_NUMBER: _ClassVar[int]
    LEAF_SWITCH_FIELD_NUMBER: _ClassVar[int]
    ZONE_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    SPOT_FIELD_NUMBER: _ClassVar[int]
    NVLINK_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    rack: str
    leaf_switch: str
    zone: str
    pool: _common_pb2.NodePool
    spot: bool
    nvlink_domain: str
    extra: _containers.ScalarMap[str, str]
    def __init__(self, rack: _Optional[str] = ..., leaf_switch: _Optional[str] = ..., zone: _Optional[str] = ..., pool: _Optional[_Union[_common_pb2.NodePool, str]] = ..., spot: _Optional[bool] = ..., nvlink_domain: _Optional[str] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HostInfo(_message.Message):
    __slots__ = ("cpu_count", "memory_bytes", "numa_nodes", "cpu_slots", "cpu_model", "os", "driver_version")
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODES_FIELD_NUMBER: _ClassVar[int]
    CPU_SLOTS_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    memory_bytes: int
    numa_nodes: int
    cpu_slots: int
    cpu_model: str
    os: str
    driver_version: str
    def __init__(self, cpu_count: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., numa_nodes: _Optional[int] = ..., cpu_slots: _Optional[int] = ..., cpu_model: _Optional[str] = ..., os: _Optional[str] = ..., driver_version: _Optional[str] = ...) -> None: ...

class DeviceUtilization(_message.Message):
    __slots__ = ("device_id", "gpu_util_percent", "memory_used_bytes", "memory_total_bytes", "temperature_celsius", "power_watts")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_UTIL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    gpu_util_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    temperature_celsius: float
    power_watts: float
    def __init__(self, device_id: _Optional[str] = ..., gpu_util_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ...) -> None: ...

class NodeUtilization(_message.Message):
    __slots__ = ("sample_time", "devices", "cpu_util_percent", "memory_used_bytes", "memory_total_bytes", "running_workers")
    SAMPLE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CPU_UTIL_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    sample_time: _timestamp_pb2.Timestamp
    devices: _containers.RepeatedCompositeFieldContainer[DeviceUtilization]
    cpu_util_percent: float
    memory_used_bytes: int
    memory_total_bytes: int
    running_workers: int
    def __init__(self, sample_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[DeviceUtilization, _Mapping]]] = ..., cpu_util_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., running_workers: _Optional[int] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "hostname", "agent_address", "labels", "devices", "nics", "host", "capacity", "state", "state_reason", "state_message", "state_change_time", "incarnation", "register_time", "last_heartbeat_time", "utilization", "agent_version", "revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NICS_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    hostname: str
    agent_address: str
    labels: NodeLabels
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    nics: _containers.RepeatedCompositeFieldContainer[Nic]
    host: HostInfo
    capacity: _common_pb2.Resources
    state: NodeState
    state_reason: str
    state_message: str
    state_change_time: _timestamp_pb2.Timestamp
    incarnation: int
    register_time: _timestamp_pb2.Timestamp
    last_heartbeat_time: _timestamp_pb2.Timestamp
    utilization: NodeUtilization
    agent_version: str
    revision: int
    def __init__(self, id: _Optional[str] = ..., hostname: _Optional[str] = ..., agent_address: _Optional[str] = ..., labels: _Optional[_Union[NodeLabels, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., nics: _Optional[_Iterable[_Union[Nic, _Mapping]]] = ..., host: _Optional[_Union[HostInfo, _Mapping]] = ..., capacity: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., state: _Optional[_Union[NodeState, str]] = ..., state_reason: _Optional[str] = ..., state_message: _Optional[str] = ..., state_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., incarnation: _Optional[int] = ..., register_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., utilization: _Optional[_Union[NodeUtilization, _Mapping]] = ..., agent_version: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...
