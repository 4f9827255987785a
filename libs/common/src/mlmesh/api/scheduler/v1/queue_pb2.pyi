from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PreemptionPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREEMPTION_POLICY_UNSPECIFIED: _ClassVar[PreemptionPolicy]
    PREEMPTION_POLICY_PREEMPT_LOWER_PRIORITY: _ClassVar[PreemptionPolicy]
    PREEMPTION_POLICY_NEVER: _ClassVar[PreemptionPolicy]
PREEMPTION_POLICY_UNSPECIFIED: PreemptionPolicy
PREEMPTION_POLICY_PREEMPT_LOWER_PRIORITY: PreemptionPolicy
PREEMPTION_POLICY_NEVER: PreemptionPolicy

class QueueSpec(_message.Message):
    __slots__ = ("team", "nominal_quota", "borrowing_limit", "weight", "default_priority_class", "team_default", "keep_idle_quota")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    NOMINAL_QUOTA_FIELD_NUMBER: _ClassVar[int]
    BORROWING_LIMIT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    TEAM_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    KEEP_IDLE_QUOTA_FIELD_NUMBER: _ClassVar[int]
    team: str
    nominal_quota: _common_pb2.Resources
    borrowing_limit: _common_pb2.Resources
    weight: float
    default_priority_class: str
    team_default: bool
    keep_idle_quota: bool
    def __init__(self, team: _Optional[str] = ..., nominal_quota: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., borrowing_limit: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., weight: _Optional[float] = ..., default_priority_class: _Optional[str] = ..., team_default: _Optional[bool] = ..., keep_idle_quota: _Optional[bool] = ...) -> None: ...

class QueueStatus(_message.Message):
    __slots__ = ("used", "borrowed", "pending_jobs", "admitted_jobs", "running_jobs", "dominant_share")
    USED_FIELD_NUMBER: _ClassVar[int]
    BORROWED_FIELD_NUMBER: _ClassVar[int]
    PENDING_JOBS_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    DOMINANT_SHARE_FIELD_NUMBER: _ClassVar[int]
    used: _common_pb2.Resources
    borrowed: _common_pb2.Resources
    pending_jobs: int
    admitted_jobs: int
    running_jobs: int
    dominant_share: float
    def __init__(self, used: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., borrowed: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., pending_jobs: _Optional[int] = ..., admitted_jobs: _Optional[int] = ..., running_jobs: _Optional[int] = ..., dominant_share: _Optional[float] = ...) -> None: ...

class Queue(_message.Message):
    __slots__ = ("meta", "spec", "status")
    META_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.ObjectMeta
    spec: QueueSpec
    status: QueueStatus
    def __init__(self, meta: _Optional[_Union[_common_pb2.ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[QueueSpec, _Mapping]] = ..., status: _Optional[_Union[QueueStatus, _Mapping]] = ...) -> None: ...

class PriorityClass(_message.Message):
    __slots__ = ("name", "value", "preemption_policy", "global_default", "description", "revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    preemption_policy: PreemptionPolicy
    global_default: bool
    description: str
    revision: int
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ..., preemption_policy: _Optional[_Union[PreemptionPolicy, str]] = ..., global_default: _Optional[bool] = ..., description: _Optional[str] = ..., revision: _Optional[int] = ...) -> None: ...
