import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATE_UNSPECIFIED: _ClassVar[WorkerState]
    WORKER_STATE_RUNNING: _ClassVar[WorkerState]
    WORKER_STATE_STOPPING: _ClassVar[WorkerState]
    WORKER_STATE_EXITED: _ClassVar[WorkerState]
    WORKER_STATE_FAILED_TO_START: _ClassVar[WorkerState]
WORKER_STATE_UNSPECIFIED: WorkerState
WORKER_STATE_RUNNING: WorkerState
WORKER_STATE_STOPPING: WorkerState
WORKER_STATE_EXITED: WorkerState
WORKER_STATE_FAILED_TO_START: WorkerState

class WorkerLaunch(_message.Message):
    __slots__ = ("rank", "local_rank", "command", "env", "device_ids", "log_path")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    rank: int
    local_rank: int
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    log_path: str
    def __init__(self, rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., device_ids: _Optional[_Iterable[str]] = ..., log_path: _Optional[str] = ...) -> None: ...

class LaunchWorkersRequest(_message.Message):
    __slots__ = ("job_id", "run_id", "attempt", "world_size", "common_env", "working_dir", "workers")
    class CommonEnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    COMMON_ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    run_id: str
    attempt: int
    world_size: int
    common_env: _containers.ScalarMap[str, str]
    working_dir: str
    workers: _containers.RepeatedCompositeFieldContainer[WorkerLaunch]
    def __init__(self, job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., world_size: _Optional[int] = ..., common_env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ..., workers: _Optional[_Iterable[_Union[WorkerLaunch, _Mapping]]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("job_id", "run_id", "attempt", "rank", "local_rank", "pid", "state", "exit_code", "signal", "log_path", "start_time", "exit_time", "message", "node_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    EXIT_TIME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    run_id: str
    attempt: int
    rank: int
    local_rank: int
    pid: int
    state: WorkerState
    exit_code: int
    signal: int
    log_path: str
    start_time: _timestamp_pb2.Timestamp
    exit_time: _timestamp_pb2.Timestamp
    message: str
    node_id: str
    def __init__(self, job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., pid: _Optional[int] = ..., state: _Optional[_Union[WorkerState, str]] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., log_path: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., exit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class LaunchWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class StopWorkersRequest(_message.Message):
    __slots__ = ("run_id", "ranks", "grace_period")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    grace_period: _duration_pb2.Duration
    def __init__(self, run_id: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class StopWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class GetWorkersRequest(_message.Message):
    __slots__ = ("run_id", "job_id", "include_exited")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EXITED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    job_id: str
    include_exited: bool
    def __init__(self, run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., include_exited: _Optional[bool] = ...) -> None: ...

class GetWorkersResponse(_message.Message):
    __slots__ = ("workers",)
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ...) -> None: ...

class StreamWorkerLogsRequest(_message.Message):
    __slots__ = ("run_id", "rank", "offset_bytes", "follow")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    rank: int
    offset_bytes: int
    follow: bool
    def __init__(self, run_id: _Optional[str] = ..., rank: _Optional[int] = ..., offset_bytes: _Optional[int] = ..., follow: _Optional[bool] = ...) -> None: ...

class StreamWorkerLogsResponse(_message.Message):
    __slots__ = ("offset_bytes", "data")
    OFFSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset_bytes: int
    data: bytes
    def __init__(self, offset_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...
