import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_INFO: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class Comparator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARATOR_UNSPECIFIED: _ClassVar[Comparator]
    COMPARATOR_GREATER_THAN: _ClassVar[Comparator]
    COMPARATOR_GREATER_OR_EQUAL: _ClassVar[Comparator]
    COMPARATOR_LESS_THAN: _ClassVar[Comparator]
    COMPARATOR_LESS_OR_EQUAL: _ClassVar[Comparator]
    COMPARATOR_EQUAL: _ClassVar[Comparator]
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_INFO: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_FIRING: AlertState
ALERT_STATE_RESOLVED: AlertState
COMPARATOR_UNSPECIFIED: Comparator
COMPARATOR_GREATER_THAN: Comparator
COMPARATOR_GREATER_OR_EQUAL: Comparator
COMPARATOR_LESS_THAN: Comparator
COMPARATOR_LESS_OR_EQUAL: Comparator
COMPARATOR_EQUAL: Comparator

class AlertRule(_message.Message):
    __slots__ = ("name", "severity", "metric", "comparator", "threshold", "for_duration", "labels", "summary", "description", "enabled")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    COMPARATOR_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FOR_DURATION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    name: str
    severity: AlertSeverity
    metric: str
    comparator: Comparator
    threshold: float
    for_duration: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    summary: str
    description: str
    enabled: bool
    def __init__(self, name: _Optional[str] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., metric: _Optional[str] = ..., comparator: _Optional[_Union[Comparator, str]] = ..., threshold: _Optional[float] = ..., for_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., summary: _Optional[str] = ..., description: _Optional[str] = ..., enabled: _Optional[bool] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("id", "rule", "severity", "state", "labels", "summary", "description", "value", "threshold", "start_time", "resolve_time", "last_eval_time")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_EVAL_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    rule: str
    severity: AlertSeverity
    state: AlertState
    labels: _containers.ScalarMap[str, str]
    summary: str
    description: str
    value: float
    threshold: float
    start_time: _timestamp_pb2.Timestamp
    resolve_time: _timestamp_pb2.Timestamp
    last_eval_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., rule: _Optional[str] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., state: _Optional[_Union[AlertState, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., summary: _Optional[str] = ..., description: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolve_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_eval_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
