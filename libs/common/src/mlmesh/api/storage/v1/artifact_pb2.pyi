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

class ArtifactKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_KIND_UNSPECIFIED: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_CHECKPOINT: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_MODEL: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_DATASET: _ClassVar[ArtifactKind]
    ARTIFACT_KIND_GENERIC: _ClassVar[ArtifactKind]

class StorageTier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STORAGE_TIER_UNSPECIFIED: _ClassVar[StorageTier]
    STORAGE_TIER_HOT: _ClassVar[StorageTier]
    STORAGE_TIER_WARM: _ClassVar[StorageTier]
    STORAGE_TIER_COLD: _ClassVar[StorageTier]

class ArtifactState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_STATE_UNSPECIFIED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_COMMITTED: _ClassVar[ArtifactState]
    ARTIFACT_STATE_MOVING: _ClassVar[ArtifactState]
    ARTIFACT_STATE_DELETING: _ClassVar[ArtifactState]

class DatasetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATASET_FORMAT_UNSPECIFIED: _ClassVar[DatasetFormat]
    DATASET_FORMAT_JSONL: _ClassVar[DatasetFormat]
    DATASET_FORMAT_PARQUET: _ClassVar[DatasetFormat]
ARTIFACT_KIND_UNSPECIFIED: ArtifactKind
ARTIFACT_KIND_CHECKPOINT: ArtifactKind
ARTIFACT_KIND_MODEL: ArtifactKind
ARTIFACT_KIND_DATASET: ArtifactKind
ARTIFACT_KIND_GENERIC: ArtifactKind
STORAGE_TIER_UNSPECIFIED: StorageTier
STORAGE_TIER_HOT: StorageTier
STORAGE_TIER_WARM: StorageTier
STORAGE_TIER_COLD: StorageTier
ARTIFACT_STATE_UNSPECIFIED: ArtifactState
ARTIFACT_STATE_COMMITTED: ArtifactState
ARTIFACT_STATE_MOVING: ArtifactState
ARTIFACT_STATE_DELETING: ArtifactState
DATASET_FORMAT_UNSPECIFIED: DatasetFormat
DATASET_FORMAT_JSONL: DatasetFormat
DATASET_FORMAT_PARQUET: DatasetFormat

class FileEntry(_message.Message):
    __slots__ = ("path", "size_bytes", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size_bytes: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("files", "total_size_bytes")
    FILES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    total_size_bytes: int
    def __init__(self, files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ..., total_size_bytes: _Optional[int] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("job_id", "run_id", "step", "epoch", "metrics", "retention")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    run_id: str
    step: int
    epoch: float
    metrics: _containers.ScalarMap[str, float]
    retention: RetentionPolicy
    def __init__(self, job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., epoch: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., retention: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("keep_latest", "keep_best", "best_metric", "best_metric_goal")
    KEEP_LATEST_FIELD_NUMBER: _ClassVar[int]
    KEEP_BEST_FIELD_NUMBER: _ClassVar[int]
    BEST_METRIC_FIELD_NUMBER: _ClassVar[int]
    BEST_METRIC_GOAL_FIELD_NUMBER: _ClassVar[int]
    keep_latest: int
    keep_best: int
    best_metric: str
    best_metric_goal: _common_pb2.MetricGoal
    def __init__(self, keep_latest: _Optional[int] = ..., keep_best: _Optional[int] = ..., best_metric: _Optional[str] = ..., best_metric_goal: _Optional[_Union[_common_pb2.MetricGoal, str]] = ...) -> None: ...

class DatasetColumn(_message.Message):
    __slots__ = ("name", "type", "nullable")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NULLABLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    nullable: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., nullable: _Optional[bool] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("format", "columns", "row_count", "splits")
    class SplitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPLITS_FIELD_NUMBER: _ClassVar[int]
    format: DatasetFormat
    columns: _containers.RepeatedCompositeFieldContainer[DatasetColumn]
    row_count: int
    splits: _containers.ScalarMap[str, str]
    def __init__(self, format: _Optional[_Union[DatasetFormat, str]] = ..., columns: _Optional[_Iterable[_Union[DatasetColumn, _Mapping]]] = ..., row_count: _Optional[int] = ..., splits: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Artifact(_message.Message):
    __slots__ = ("meta", "name", "kind", "state", "manifest", "tier", "checkpoint", "dataset", "digest", "last_access_time", "pinned")
    META_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESS_TIME_FIELD_NUMBER: _ClassVar[int]
    PINNED_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.ObjectMeta
    name: str
    kind: ArtifactKind
    state: ArtifactState
    manifest: Manifest
    tier: StorageTier
    checkpoint: CheckpointInfo
    dataset: DatasetInfo
    digest: str
    last_access_time: _timestamp_pb2.Timestamp
    pinned: bool
    def __init__(self, meta: _Optional[_Union[_common_pb2.ObjectMeta, _Mapping]] = ..., name: _Optional[str] = ..., kind: _Optional[_Union[ArtifactKind, str]] = ..., state: _Optional[_Union[ArtifactState, str]] = ..., manifest: _Optional[_Union[Manifest, _Mapping]] = ..., tier: _Optional[_Union[StorageTier, str]] = ..., checkpoint: _Optional[_Union[CheckpointInfo, _Mapping]] = ..., dataset: _Optional[_Union[DatasetInfo, _Mapping]] = ..., digest: _Optional[str] = ..., last_access_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pinned: _Optional[bool] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("team", "logical_bytes", "stored_bytes", "quota_bytes", "artifact_count", "tiers")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    LOGICAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_COUNT_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    team: str
    logical_bytes: int
    stored_bytes: int
    quota_bytes: int
    artifact_count: int
    tiers: _containers.RepeatedCompositeFieldContainer[TierUsage]
    def __init__(self, team: _Optional[str] = ..., logical_bytes: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., quota_bytes: _Optional[int] = ..., artifact_count: _Optional[int] = ..., tiers: _Optional[_Iterable[_Union[TierUsage, _Mapping]]] = ...) -> None: ...

class TierUsage(_message.Message):
    __slots__ = ("tier", "stored_bytes", "capacity_bytes")
    TIER_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    tier: StorageTier
    stored_bytes: int
    capacity_bytes: int
    def __init__(self, tier: _Optional[_Union[StorageTier, str]] = ..., stored_bytes: _Optional[int] = ..., capacity_bytes: _Optional[int] = ...) -> None: ...
