import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LabelOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_OPERATOR_UNSPECIFIED: _ClassVar[LabelOperator]
    LABEL_OPERATOR_IN: _ClassVar[LabelOperator]
    LABEL_OPERATOR_NOT_IN: _ClassVar[LabelOperator]
    LABEL_OPERATOR_EXISTS: _ClassVar[LabelOperator]
    LABEL_OPERATOR_DOES_NOT_EXIST: _ClassVar[LabelOperator]

class NodePool(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_POOL_UNSPECIFIED: _ClassVar[NodePool]
    NODE_POOL_ONPREM: _ClassVar[NodePool]
    NODE_POOL_CLOUD: _ClassVar[NodePool]

class ModelTask(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_TASK_UNSPECIFIED: _ClassVar[ModelTask]
    MODEL_TASK_TEXT_GENERATION: _ClassVar[ModelTask]
    MODEL_TASK_TEXT_CLASSIFICATION: _ClassVar[ModelTask]
    MODEL_TASK_EMBEDDING: _ClassVar[ModelTask]

class MetricGoal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_GOAL_UNSPECIFIED: _ClassVar[MetricGoal]
    METRIC_GOAL_MINIMIZE: _ClassVar[MetricGoal]
    METRIC_GOAL_MAXIMIZE: _ClassVar[MetricGoal]

class TopologyLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOPOLOGY_LEVEL_UNSPECIFIED: _ClassVar[TopologyLevel]
    TOPOLOGY_LEVEL_SAME_NODE: _ClassVar[TopologyLevel]
    TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN: _ClassVar[TopologyLevel]
    TOPOLOGY_LEVEL_SAME_SWITCH: _ClassVar[TopologyLevel]
    TOPOLOGY_LEVEL_SAME_ZONE: _ClassVar[TopologyLevel]
    TOPOLOGY_LEVEL_CROSS_ZONE: _ClassVar[TopologyLevel]
LABEL_OPERATOR_UNSPECIFIED: LabelOperator
LABEL_OPERATOR_IN: LabelOperator
LABEL_OPERATOR_NOT_IN: LabelOperator
LABEL_OPERATOR_EXISTS: LabelOperator
LABEL_OPERATOR_DOES_NOT_EXIST: LabelOperator
NODE_POOL_UNSPECIFIED: NodePool
NODE_POOL_ONPREM: NodePool
NODE_POOL_CLOUD: NodePool
MODEL_TASK_UNSPECIFIED: ModelTask
MODEL_TASK_TEXT_GENERATION: ModelTask
MODEL_TASK_TEXT_CLASSIFICATION: ModelTask
MODEL_TASK_EMBEDDING: ModelTask
METRIC_GOAL_UNSPECIFIED: MetricGoal
METRIC_GOAL_MINIMIZE: MetricGoal
METRIC_GOAL_MAXIMIZE: MetricGoal
TOPOLOGY_LEVEL_UNSPECIFIED: TopologyLevel
TOPOLOGY_LEVEL_SAME_NODE: TopologyLevel
TOPOLOGY_LEVEL_SAME_NVLINK_DOMAIN: TopologyLevel
TOPOLOGY_LEVEL_SAME_SWITCH: TopologyLevel
TOPOLOGY_LEVEL_SAME_ZONE: TopologyLevel
TOPOLOGY_LEVEL_CROSS_ZONE: TopologyLevel

class ObjectMeta(_message.Message):
    __slots__ = ("id", "team", "labels", "create_time", "update_time", "revision", "created_by")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    id: str
    team: str
    labels: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    revision: int
    created_by: str
    def __init__(self, id: _Optional[str] = ..., team: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ..., created_by: _Optional[str] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("gpus", "cpu_millis", "memory_bytes")
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CPU_MILLIS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    gpus: int
    cpu_millis: int
    memory_bytes: int
    def __init__(self, gpus: _Optional[int] = ..., cpu_millis: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class LabelRequirement(_message.Message):
    __slots__ = ("key", "operator", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    operator: LabelOperator
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., operator: _Optional[_Union[LabelOperator, str]] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class LabelSelector(_message.Message):
    __slots__ = ("match_labels", "match_expressions")
    class MatchLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MATCH_LABELS_FIELD_NUMBER: _ClassVar[int]
    MATCH_EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    match_labels: _containers.ScalarMap[str, str]
    match_expressions: _containers.RepeatedCompositeFieldContainer[LabelRequirement]
    def __init__(self, match_labels: _Optional[_Mapping[str, str]] = ..., match_expressions: _Optional[_Iterable[_Union[LabelRequirement, _Mapping]]] = ...) -> None: ...
