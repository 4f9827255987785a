import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IssueEventCredentialsRequest(_message.Message):
    __slots__ = ("team", "ttl")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    team: str
    ttl: _duration_pb2.Duration
    def __init__(self, team: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class IssueEventCredentialsResponse(_message.Message):
    __slots__ = ("credentials", "public_key", "expires_at", "subjects", "inbox_prefix", "streams")
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    INBOX_PREFIX_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    credentials: str
    public_key: str
    expires_at: _timestamp_pb2.Timestamp
    subjects: _containers.RepeatedScalarFieldContainer[str]
    inbox_prefix: str
    streams: _containers.RepeatedCompositeFieldContainer[StreamFilter]
    def __init__(self, credentials: _Optional[str] = ..., public_key: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., subjects: _Optional[_Iterable[str]] = ..., inbox_prefix: _Optional[str] = ..., streams: _Optional[_Iterable[_Union[StreamFilter, _Mapping]]] = ...) -> None: ...

class StreamFilter(_message.Message):
    __slots__ = ("stream", "filter_subject")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    FILTER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    stream: str
    filter_subject: str
    def __init__(self, stream: _Optional[str] = ..., filter_subject: _Optional[str] = ...) -> None: ...
