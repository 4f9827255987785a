from google.protobuf import field_mask_pb2 as _field_mask_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from mlmesh.api.scheduler.v1 import job_pb2 as _job_pb2
from mlmesh.api.scheduler.v1 import queue_pb2 as _queue_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WatchEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_EVENT_TYPE_UNSPECIFIED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SNAPSHOT: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_CHANGED: _ClassVar[WatchEventType]
    WATCH_EVENT_TYPE_SNAPSHOT_END: _ClassVar[WatchEventType]

class BlockerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCKER_KIND_UNSPECIFIED: _ClassVar[BlockerKind]
    BLOCKER_KIND_QUOTA: _ClassVar[BlockerKind]
    BLOCKER_KIND_NO_FIT: _ClassVar[BlockerKind]
    BLOCKER_KIND_QUEUE_ORDER: _ClassVar[BlockerKind]
    BLOCKER_KIND_DEPENDENCIES: _ClassVar[BlockerKind]
    BLOCKER_KIND_BACKOFF: _ClassVar[BlockerKind]
    BLOCKER_KIND_RESERVATION: _ClassVar[BlockerKind]
    BLOCKER_KIND_PREEMPTION_IN_PROGRESS: _ClassVar[BlockerKind]
WATCH_EVENT_TYPE_UNSPECIFIED: WatchEventType
WATCH_EVENT_TYPE_SNAPSHOT: WatchEventType
WATCH_EVENT_TYPE_CHANGED: WatchEventType
WATCH_EVENT_TYPE_SNAPSHOT_END: WatchEventType
BLOCKER_KIND_UNSPECIFIED: BlockerKind
BLOCKER_KIND_QUOTA: BlockerKind
BLOCKER_KIND_NO_FIT: BlockerKind
BLOCKER_KIND_QUEUE_ORDER: BlockerKind
BLOCKER_KIND_DEPENDENCIES: BlockerKind
BLOCKER_KIND_BACKOFF: BlockerKind
BLOCKER_KIND_RESERVATION: BlockerKind
BLOCKER_KIND_PREEMPTION_IN_PROGRESS: BlockerKind

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec", "request_id", "dry_run")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    spec: _job_pb2.JobSpec
    request_id: str
    dry_run: bool
    def __init__(self, spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., request_id: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id", "reason", "checkpoint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    checkpoint: bool
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., checkpoint: _Optional[bool] = ...) -> None: ...

class CancelJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("team", "states", "queue", "label_selector", "parent_job_id", "page_size", "page_token")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team: str
    states: _containers.RepeatedScalarFieldContainer[_job_pb2.JobState]
    queue: str
    label_selector: _common_pb2.LabelSelector
    parent_job_id: str
    page_size: int
    page_token: str
    def __init__(self, team: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_job_pb2.JobState, str]]] = ..., queue: _Optional[str] = ..., label_selector: _Optional[_Union[_common_pb2.LabelSelector, _Mapping]] = ..., parent_job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[_job_pb2.Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[_job_pb2.Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchJobsRequest(_message.Message):
    __slots__ = ("team", "job_ids", "states", "label_selector", "send_initial")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    SEND_INITIAL_FIELD_NUMBER: _ClassVar[int]
    team: str
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    states: _containers.RepeatedScalarFieldContainer[_job_pb2.JobState]
    label_selector: _common_pb2.LabelSelector
    send_initial: bool
    def __init__(self, team: _Optional[str] = ..., job_ids: _Optional[_Iterable[str]] = ..., states: _Optional[_Iterable[_Union[_job_pb2.JobState, str]]] = ..., label_selector: _Optional[_Union[_common_pb2.LabelSelector, _Mapping]] = ..., send_initial: _Optional[bool] = ...) -> None: ...

class WatchJobsResponse(_message.Message):
    __slots__ = ("type", "job", "previous_state")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    type: WatchEventType
    job: _job_pb2.Job
    previous_state: _job_pb2.JobState
    def __init__(self, type: _Optional[_Union[WatchEventType, str]] = ..., job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., previous_state: _Optional[_Union[_job_pb2.JobState, str]] = ...) -> None: ...

class ExplainJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Blocker(_message.Message):
    __slots__ = ("kind", "message", "requested", "available")
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    kind: BlockerKind
    message: str
    requested: _common_pb2.Resources
    available: _common_pb2.Resources
    def __init__(self, kind: _Optional[_Union[BlockerKind, str]] = ..., message: _Optional[str] = ..., requested: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ..., available: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ...) -> None: ...

class NodeRejection(_message.Message):
    __slots__ = ("reason", "node_count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    node_count: int
    def __init__(self, reason: _Optional[str] = ..., node_count: _Optional[int] = ...) -> None: ...

class ExplainJobResponse(_message.Message):
    __slots__ = ("job", "queue_position", "queue_length", "blockers", "node_rejections", "queue", "summary")
    JOB_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    BLOCKERS_FIELD_NUMBER: _ClassVar[int]
    NODE_REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    job: _job_pb2.Job
    queue_position: int
    queue_length: int
    blockers: _containers.RepeatedCompositeFieldContainer[Blocker]
    node_rejections: _containers.RepeatedCompositeFieldContainer[NodeRejection]
    queue: _queue_pb2.Queue
    summary: str
    def __init__(self, job: _Optional[_Union[_job_pb2.Job, _Mapping]] = ..., queue_position: _Optional[int] = ..., queue_length: _Optional[int] = ..., blockers: _Optional[_Iterable[_Union[Blocker, _Mapping]]] = ..., node_rejections: _Optional[_Iterable[_Union[NodeRejection, _Mapping]]] = ..., queue: _Optional[_Union[_queue_pb2.Queue, _Mapping]] = ..., summary: _Optional[str] = ...) -> None: ...

class CreateQueueRequest(_message.Message):
    __slots__ = ("name", "spec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _queue_pb2.QueueSpec
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_queue_pb2.QueueSpec, _Mapping]] = ...) -> None: ...

class CreateQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _queue_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_queue_pb2.Queue, _Mapping]] = ...) -> None: ...

class UpdateQueueRequest(_message.Message):
    __slots__ = ("name", "spec", "update_mask", "expected_revision")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: _queue_pb2.QueueSpec
    update_mask: _field_mask_pb2.FieldMask
    expected_revision: int
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[_queue_pb2.QueueSpec, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class UpdateQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _queue_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_queue_pb2.Queue, _Mapping]] = ...) -> None: ...

class GetQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetQueueResponse(_message.Message):
    __slots__ = ("queue",)
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    queue: _queue_pb2.Queue
    def __init__(self, queue: _Optional[_Union[_queue_pb2.Queue, _Mapping]] = ...) -> None: ...

class ListQueuesRequest(_message.Message):
    __slots__ = ("team", "page_size", "page_token")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team: str
    page_size: int
    page_token: str
    def __init__(self, team: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListQueuesResponse(_message.Message):
    __slots__ = ("queues", "next_page_token")
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    queues: _containers.RepeatedCompositeFieldContainer[_queue_pb2.Queue]
    next_page_token: str
    def __init__(self, queues: _Optional[_Iterable[_Union[_queue_pb2.Queue, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteQueueRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteQueueResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreatePriorityClassRequest(_message.Message):
    __slots__ = ("priority_class",)
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    priority_class: _queue_pb2.PriorityClass
    def __init__(self, priority_class: _Optional[_Union[_queue_pb2.PriorityClass, _Mapping]] = ...) -> None: ...

class CreatePriorityClassResponse(_message.Message):
    __slots__ = ("priority_class",)
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    priority_class: _queue_pb2.PriorityClass
    def __init__(self, priority_class: _Optional[_Union[_queue_pb2.PriorityClass, _Mapping]] = ...) -> None: ...

class UpdatePriorityClassRequest(_message.Message):
    __slots__ = ("priority_class", "update_mask")
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    priority_class: _queue_pb2.PriorityClass
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, priority_class: _Optional[_Union[_queue_pb2.PriorityClass, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdatePriorityClassResponse(_message.Message):
    __slots__ = ("priority_class",)
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    priority_class: _queue_pb2.PriorityClass
    def __init__(self, priority_class: _Optional[_Union[_queue_pb2.PriorityClass, _Mapping]] = ...) -> None: ...

class GetPriorityClassRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetPriorityClassResponse(_message.Message):
    __slots__ = ("priority_class",)
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    priority_class: _queue_pb2.PriorityClass
    def __init__(self, priority_class: _Optional[_Union[_queue_pb2.PriorityClass, _Mapping]] = ...) -> None: ...

class ListPriorityClassesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPriorityClassesResponse(_message.Message):
    __slots__ = ("priority_classes",)
    PRIORITY_CLASSES_FIELD_NUMBER: _ClassVar[int]
    priority_classes: _containers.RepeatedCompositeFieldContainer[_queue_pb2.PriorityClass]
    def __init__(self, priority_classes: _Optional[_Iterable[_Union[_queue_pb2.PriorityClass, _Mapping]]] = ...) -> None: ...

class DeletePriorityClassRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeletePriorityClassResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
