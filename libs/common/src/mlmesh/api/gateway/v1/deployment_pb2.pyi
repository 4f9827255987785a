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

class InstanceKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_KIND_UNSPECIFIED: _ClassVar[InstanceKind]
    INSTANCE_KIND_GPU: _ClassVar[InstanceKind]
    INSTANCE_KIND_CPU: _ClassVar[InstanceKind]

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_PENDING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_LOADING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_READY: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_UPDATING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_DRAINING: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_DELETED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_FAILED: _ClassVar[DeploymentState]
INSTANCE_KIND_UNSPECIFIED: InstanceKind
INSTANCE_KIND_GPU: InstanceKind
INSTANCE_KIND_CPU: InstanceKind
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
DEPLOYMENT_STATE_PENDING: DeploymentState
DEPLOYMENT_STATE_LOADING: DeploymentState
DEPLOYMENT_STATE_READY: DeploymentState
DEPLOYMENT_STATE_UPDATING: DeploymentState
DEPLOYMENT_STATE_DRAINING: DeploymentState
DEPLOYMENT_STATE_DELETED: DeploymentState
DEPLOYMENT_STATE_FAILED: DeploymentState

class ModelRef(_message.Message):
    __slots__ = ("name", "version", "alias")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    alias: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ...) -> None: ...

class BatchingConfig(_message.Message):
    __slots__ = ("max_batch_size", "dynamic_batching", "max_queue_delay", "preferred_batch_sizes")
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DYNAMIC_BATCHING_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_FIELD_NUMBER: _ClassVar[int]
    PREFERRED_BATCH_SIZES_FIELD_NUMBER: _ClassVar[int]
    max_batch_size: int
    dynamic_batching: bool
    max_queue_delay: _duration_pb2.Duration
    preferred_batch_sizes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, max_batch_size: _Optional[int] = ..., dynamic_batching: _Optional[bool] = ..., max_queue_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., preferred_batch_sizes: _Optional[_Iterable[int]] = ...) -> None: ...

class Canary(_message.Message):
    __slots__ = ("model", "percent", "sticky_key")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PERCENT_FIELD_NUMBER: _ClassVar[int]
    STICKY_KEY_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    percent: int
    sticky_key: str
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., percent: _Optional[int] = ..., sticky_key: _Optional[str] = ...) -> None: ...

class RateLimit(_message.Message):
    __slots__ = ("requests_per_second", "burst")
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    requests_per_second: float
    burst: int
    def __init__(self, requests_per_second: _Optional[float] = ..., burst: _Optional[int] = ...) -> None: ...

class DeploymentSpec(_message.Message):
    __slots__ = ("model", "task", "instance_count", "instance_kind", "batching", "cache_ttl", "canary", "rate_limit", "parameters")
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_COUNT_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_KIND_FIELD_NUMBER: _ClassVar[int]
    BATCHING_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_FIELD_NUMBER: _ClassVar[int]
    CANARY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    model: ModelRef
    task: _common_pb2.ModelTask
    instance_count: int
    instance_kind: InstanceKind
    batching: BatchingConfig
    cache_ttl: _duration_pb2.Duration
    canary: Canary
    rate_limit: RateLimit
    parameters: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[_Union[ModelRef, _Mapping]] = ..., task: _Optional[_Union[_common_pb2.ModelTask, str]] = ..., instance_count: _Optional[int] = ..., instance_kind: _Optional[_Union[InstanceKind, str]] = ..., batching: _Optional[_Union[BatchingConfig, _Mapping]] = ..., cache_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., canary: _Optional[_Union[Canary, _Mapping]] = ..., rate_limit: _Optional[_Union[RateLimit, _Mapping]] = ..., parameters: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeploymentStatus(_message.Message):
    __slots__ = ("state", "reason", "message", "model_version", "canary_version", "backend_model_names", "ready_instances", "ready_time")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_MODEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    READY_INSTANCES_FIELD_NUMBER: _ClassVar[int]
    READY_TIME_FIELD_NUMBER: _ClassVar[int]
    state: DeploymentState
    reason: str
    message: str
    model_version: int
    canary_version: int
    backend_model_names: _containers.RepeatedScalarFieldContainer[str]
    ready_instances: int
    ready_time: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[DeploymentState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., model_version: _Optional[int] = ..., canary_version: _Optional[int] = ..., backend_model_names: _Optional[_Iterable[str]] = ..., ready_instances: _Optional[int] = ..., ready_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Deployment(_message.Message):
    __slots__ = ("meta", "spec", "status")
    META_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.ObjectMeta
    spec: DeploymentSpec
    status: DeploymentStatus
    def __init__(self, meta: _Optional[_Union[_common_pb2.ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[DeploymentSpec, _Mapping]] = ..., status: _Optional[_Union[DeploymentStatus, _Mapping]] = ...) -> None: ...
