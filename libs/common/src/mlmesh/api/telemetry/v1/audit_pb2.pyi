import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditRecordKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_RECORD_KIND_UNSPECIFIED: _ClassVar[AuditRecordKind]
    AUDIT_RECORD_KIND_RPC: _ClassVar[AuditRecordKind]
    AUDIT_RECORD_KIND_DROPPED: _ClassVar[AuditRecordKind]
    AUDIT_RECORD_KIND_FORKED: _ClassVar[AuditRecordKind]

class AuditProblemKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_PROBLEM_KIND_UNSPECIFIED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_EDITED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_DELETED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_REORDERED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_TRUNCATED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_UNKNOWN_START: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_FORKED: _ClassVar[AuditProblemKind]
    AUDIT_PROBLEM_KIND_DROPPED: _ClassVar[AuditProblemKind]
AUDIT_RECORD_KIND_UNSPECIFIED: AuditRecordKind
AUDIT_RECORD_KIND_RPC: AuditRecordKind
AUDIT_RECORD_KIND_DROPPED: AuditRecordKind
AUDIT_RECORD_KIND_FORKED: AuditRecordKind
AUDIT_PROBLEM_KIND_UNSPECIFIED: AuditProblemKind
AUDIT_PROBLEM_KIND_EDITED: AuditProblemKind
AUDIT_PROBLEM_KIND_DELETED: AuditProblemKind
AUDIT_PROBLEM_KIND_REORDERED: AuditProblemKind
AUDIT_PROBLEM_KIND_TRUNCATED: AuditProblemKind
AUDIT_PROBLEM_KIND_UNKNOWN_START: AuditProblemKind
AUDIT_PROBLEM_KIND_FORKED: AuditProblemKind
AUDIT_PROBLEM_KIND_DROPPED: AuditProblemKind

class AuditRecord(_message.Message):
    __slots__ = ("kind", "service", "instance", "seq", "time", "subject", "team", "roles", "method", "object", "outcome", "trace_id", "dropped_count", "prev_hash", "hash", "stream_sequence")
    class ObjectEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    OBJECT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DROPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    STREAM_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    kind: AuditRecordKind
    service: str
    instance: str
    seq: int
    time: _timestamp_pb2.Timestamp
    subject: str
    team: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    method: str
    object: _containers.ScalarMap[str, str]
    outcome: str
    trace_id: str
    dropped_count: int
    prev_hash: str
    hash: str
    stream_sequence: int
    def __init__(self, kind: _Optional[_Union[AuditRecordKind, str]] = ..., service: _Optional[str] = ..., instance: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subject: _Optional[str] = ..., team: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., object: _Optional[_Mapping[str, str]] = ..., outcome: _Optional[str] = ..., trace_id: _Optional[str] = ..., dropped_count: _Optional[int] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., stream_sequence: _Optional[int] = ...) -> None: ...

class AuditProblem(_message.Message):
    __slots__ = ("kind", "instance", "seq", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: AuditProblemKind
    instance: str
    seq: int
    detail: str
    def __init__(self, kind: _Optional[_Union[AuditProblemKind, str]] = ..., instance: _Optional[str] = ..., seq: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...
