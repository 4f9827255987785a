import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from mlmesh.api.storage.v1 import artifact_pb2 as _artifact_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DirectAccessMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECT_ACCESS_METHOD_UNSPECIFIED: _ClassVar[DirectAccessMethod]
    DIRECT_ACCESS_METHOD_FILESYSTEM: _ClassVar[DirectAccessMethod]
    DIRECT_ACCESS_METHOD_S3_PRESIGNED: _ClassVar[DirectAccessMethod]
DIRECT_ACCESS_METHOD_UNSPECIFIED: DirectAccessMethod
DIRECT_ACCESS_METHOD_FILESYSTEM: DirectAccessMethod
DIRECT_ACCESS_METHOD_S3_PRESIGNED: DirectAccessMethod

class ArtifactDraft(_message.Message):
    __slots__ = ("team", "name", "kind", "labels", "checkpoint", "dataset", "tier")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEAM_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    team: str
    name: str
    kind: _artifact_pb2.ArtifactKind
    labels: _containers.ScalarMap[str, str]
    checkpoint: _artifact_pb2.CheckpointInfo
    dataset: _artifact_pb2.DatasetInfo
    tier: _artifact_pb2.StorageTier
    def __init__(self, team: _Optional[str] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[_artifact_pb2.ArtifactKind, str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., checkpoint: _Optional[_Union[_artifact_pb2.CheckpointInfo, _Mapping]] = ..., dataset: _Optional[_Union[_artifact_pb2.DatasetInfo, _Mapping]] = ..., tier: _Optional[_Union[_artifact_pb2.StorageTier, str]] = ...) -> None: ...

class BeginUploadRequest(_message.Message):
    __slots__ = ("artifact", "request_id", "expected_files")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FILES_FIELD_NUMBER: _ClassVar[int]
    artifact: ArtifactDraft
    request_id: str
    expected_files: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.FileEntry]
    def __init__(self, artifact: _Optional[_Union[ArtifactDraft, _Mapping]] = ..., request_id: _Optional[str] = ..., expected_files: _Optional[_Iterable[_Union[_artifact_pb2.FileEntry, _Mapping]]] = ...) -> None: ...

class BeginUploadResponse(_message.Message):
    __slots__ = ("upload_id", "expire_time", "chunk_size_bytes", "already_present_paths")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_PATHS_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    expire_time: _timestamp_pb2.Timestamp
    chunk_size_bytes: int
    already_present_paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, upload_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., chunk_size_bytes: _Optional[int] = ..., already_present_paths: _Optional[_Iterable[str]] = ...) -> None: ...

class UploadChunksRequest(_message.Message):
    __slots__ = ("upload_id", "path", "offset_bytes", "data", "last_chunk")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    path: str
    offset_bytes: int
    data: bytes
    last_chunk: bool
    def __init__(self, upload_id: _Optional[str] = ..., path: _Optional[str] = ..., offset_bytes: _Optional[int] = ..., data: _Optional[bytes] = ..., last_chunk: _Optional[bool] = ...) -> None: ...

class FileProgress(_message.Message):
    __slots__ = ("path", "received_bytes", "complete")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    path: str
    received_bytes: int
    complete: bool
    def __init__(self, path: _Optional[str] = ..., received_bytes: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class UploadChunksResponse(_message.Message):
    __slots__ = ("upload_id", "files")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    files: _containers.RepeatedCompositeFieldContainer[FileProgress]
    def __init__(self, upload_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileProgress, _Mapping]]] = ...) -> None: ...

class GetUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class GetUploadResponse(_message.Message):
    __slots__ = ("upload_id", "files", "expire_time")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    files: _containers.RepeatedCompositeFieldContainer[FileProgress]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, upload_id: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileProgress, _Mapping]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AbortUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class AbortUploadResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PresignedUrl(_message.Message):
    __slots__ = ("path", "url", "http_method", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PATH_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HTTP_METHOD_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    path: str
    url: str
    http_method: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, path: _Optional[str] = ..., url: _Optional[str] = ..., http_method: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateDirectUploadRequest(_message.Message):
    __slots__ = ("artifact", "request_id", "method", "paths", "ttl")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    artifact: ArtifactDraft
    request_id: str
    method: DirectAccessMethod
    paths: _containers.RepeatedScalarFieldContainer[str]
    ttl: _duration_pb2.Duration
    def __init__(self, artifact: _Optional[_Union[ArtifactDraft, _Mapping]] = ..., request_id: _Optional[str] = ..., method: _Optional[_Union[DirectAccessMethod, str]] = ..., paths: _Optional[_Iterable[str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateDirectUploadResponse(_message.Message):
    __slots__ = ("upload_id", "method", "filesystem_path", "urls", "expire_time")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEM_PATH_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    method: DirectAccessMethod
    filesystem_path: str
    urls: _containers.RepeatedCompositeFieldContainer[PresignedUrl]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, upload_id: _Optional[str] = ..., method: _Optional[_Union[DirectAccessMethod, str]] = ..., filesystem_path: _Optional[str] = ..., urls: _Optional[_Iterable[_Union[PresignedUrl, _Mapping]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CommitArtifactRequest(_message.Message):
    __slots__ = ("upload_id", "manifest")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    manifest: _artifact_pb2.Manifest
    def __init__(self, upload_id: _Optional[str] = ..., manifest: _Optional[_Union[_artifact_pb2.Manifest, _Mapping]] = ...) -> None: ...

class CommitArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("artifact_id", "path", "offset_bytes", "length_bytes")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    LENGTH_BYTES_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    path: str
    offset_bytes: int
    length_bytes: int
    def __init__(self, artifact_id: _Optional[str] = ..., path: _Optional[str] = ..., offset_bytes: _Optional[int] = ..., length_bytes: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("file", "offset_bytes", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: _artifact_pb2.FileEntry
    offset_bytes: int
    data: bytes
    def __init__(self, file: _Optional[_Union[_artifact_pb2.FileEntry, _Mapping]] = ..., offset_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class CreateDirectDownloadRequest(_message.Message):
    __slots__ = ("artifact_id", "method", "ttl")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    method: DirectAccessMethod
    ttl: _duration_pb2.Duration
    def __init__(self, artifact_id: _Optional[str] = ..., method: _Optional[_Union[DirectAccessMethod, str]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CreateDirectDownloadResponse(_message.Message):
    __slots__ = ("artifact", "method", "filesystem_path", "urls", "expire_time")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    FILESYSTEM_PATH_FIELD_NUMBER: _ClassVar[int]
    URLS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    method: DirectAccessMethod
    filesystem_path: str
    urls: _containers.RepeatedCompositeFieldContainer[PresignedUrl]
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ..., method: _Optional[_Union[DirectAccessMethod, str]] = ..., filesystem_path: _Optional[str] = ..., urls: _Optional[_Iterable[_Union[PresignedUrl, _Mapping]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_id",)
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    def __init__(self, artifact_id: _Optional[str] = ...) -> None: ...

class GetArtifactResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("team", "kind", "job_id", "name", "tier", "label_selector", "page_size", "page_token")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team: str
    kind: _artifact_pb2.ArtifactKind
    job_id: str
    name: str
    tier: _artifact_pb2.StorageTier
    label_selector: _common_pb2.LabelSelector
    page_size: int
    page_token: str
    def __init__(self, team: _Optional[str] = ..., kind: _Optional[_Union[_artifact_pb2.ArtifactKind, str]] = ..., job_id: _Optional[str] = ..., name: _Optional[str] = ..., tier: _Optional[_Union[_artifact_pb2.StorageTier, str]] = ..., label_selector: _Optional[_Union[_common_pb2.LabelSelector, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "next_page_token")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[_artifact_pb2.Artifact]
    next_page_token: str
    def __init__(self, artifacts: _Optional[_Iterable[_Union[_artifact_pb2.Artifact, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "force")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    force: bool
    def __init__(self, artifact_id: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteArtifactResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetArtifactTierRequest(_message.Message):
    __slots__ = ("artifact_id", "tier")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    tier: _artifact_pb2.StorageTier
    def __init__(self, artifact_id: _Optional[str] = ..., tier: _Optional[_Union[_artifact_pb2.StorageTier, str]] = ...) -> None: ...

class SetArtifactTierResponse(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("team",)
    TEAM_FIELD_NUMBER: _ClassVar[int]
    team: str
    def __init__(self, team: _Optional[str] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _artifact_pb2.Usage
    def __init__(self, usage: _Optional[_Union[_artifact_pb2.Usage, _Mapping]] = ...) -> None: ...

class SetQuotaRequest(_message.Message):
    __slots__ = ("team", "quota_bytes")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    team: str
    quota_bytes: int
    def __init__(self, team: _Optional[str] = ..., quota_bytes: _Optional[int] = ...) -> None: ...

class SetQuotaResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _artifact_pb2.Usage
    def __init__(self, usage: _Optional[_Union[_artifact_pb2.Usage, _Mapping]] = ...) -> None: ...
