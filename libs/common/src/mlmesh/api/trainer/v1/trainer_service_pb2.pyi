import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from mlmesh.api.scheduler.v1 import job_pb2 as _job_pb2
from mlmesh.api.trainer.v1 import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartRunRequest(_message.Message):
    __slots__ = ("job_id", "team", "attempt", "spec", "placement", "resume_from_checkpoint")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    team: str
    attempt: int
    spec: _job_pb2.JobSpec
    placement: _job_pb2.Placement
    resume_from_checkpoint: str
    def __init__(self, job_id: _Optional[str] = ..., team: _Optional[str] = ..., attempt: _Optional[int] = ..., spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., placement: _Optional[_Union[_job_pb2.Placement, _Mapping]] = ..., resume_from_checkpoint: _Optional[str] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _run_pb2.Run
    def __init__(self, run: _Optional[_Union[_run_pb2.Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _run_pb2.Run
    def __init__(self, run: _Optional[_Union[_run_pb2.Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("team", "job_id", "states", "page_size", "page_token")
    TEAM_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    team: str
    job_id: str
    states: _containers.RepeatedScalarFieldContainer[_run_pb2.RunState]
    page_size: int
    page_token: str
    def __init__(self, team: _Optional[str] = ..., job_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_run_pb2.RunState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[_run_pb2.Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[_run_pb2.Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id", "checkpoint", "grace_period", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    checkpoint: bool
    grace_period: _duration_pb2.Duration
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., checkpoint: _Optional[bool] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: _run_pb2.Run
    def __init__(self, run: _Optional[_Union[_run_pb2.Run, _Mapping]] = ...) -> None: ...

class DeviceProfile(_message.Message):
    __slots__ = ("gpu_model", "gpu_memory_bytes", "host_memory_bytes", "supports_bf16", "peak_flops_per_second")
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_BF16_FIELD_NUMBER: _ClassVar[int]
    PEAK_FLOPS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    gpu_model: str
    gpu_memory_bytes: int
    host_memory_bytes: int
    supports_bf16: bool
    peak_flops_per_second: float
    def __init__(self, gpu_model: _Optional[str] = ..., gpu_memory_bytes: _Optional[int] = ..., host_memory_bytes: _Optional[int] = ..., supports_bf16: _Optional[bool] = ..., peak_flops_per_second: _Optional[float] = ...) -> None: ...

class PlanRunRequest(_message.Message):
    __slots__ = ("spec", "device")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    spec: _job_pb2.JobSpec
    device: DeviceProfile
    def __init__(self, spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., device: _Optional[_Union[DeviceProfile, _Mapping]] = ...) -> None: ...

class PlanRunResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: _run_pb2.Plan
    def __init__(self, plan: _Optional[_Union[_run_pb2.Plan, _Mapping]] = ...) -> None: ...
