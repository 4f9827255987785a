import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.scheduler.v1 import job_pb2 as _job_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OffloadTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFFLOAD_TARGET_UNSPECIFIED: _ClassVar[OffloadTarget]
    OFFLOAD_TARGET_NONE: _ClassVar[OffloadTarget]
    OFFLOAD_TARGET_CPU: _ClassVar[OffloadTarget]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_STARTING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_RESTARTING: _ClassVar[RunState]
    RUN_STATE_STOPPING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]

class ExecutorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTOR_KIND_UNSPECIFIED: _ClassVar[ExecutorKind]
    EXECUTOR_KIND_LOCAL: _ClassVar[ExecutorKind]
    EXECUTOR_KIND_AGENTS: _ClassVar[ExecutorKind]
    EXECUTOR_KIND_KUBERNETES: _ClassVar[ExecutorKind]
OFFLOAD_TARGET_UNSPECIFIED: OffloadTarget
OFFLOAD_TARGET_NONE: OffloadTarget
OFFLOAD_TARGET_CPU: OffloadTarget
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_STARTING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_RESTARTING: RunState
RUN_STATE_STOPPING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_STOPPED: RunState
EXECUTOR_KIND_UNSPECIFIED: ExecutorKind
EXECUTOR_KIND_LOCAL: ExecutorKind
EXECUTOR_KIND_AGENTS: ExecutorKind
EXECUTOR_KIND_KUBERNETES: ExecutorKind

class MemoryEstimate(_message.Message):
    __slots__ = ("parameters_bytes", "gradients_bytes", "optimizer_bytes", "activations_bytes", "overhead_bytes", "total_bytes", "device_capacity_bytes", "host_offload_bytes", "fits")
    PARAMETERS_BYTES_FIELD_NUMBER: _ClassVar[int]
    GRADIENTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_BYTES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_BYTES_FIELD_NUMBER: _ClassVar[int]
    OVERHEAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_OFFLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    FITS_FIELD_NUMBER: _ClassVar[int]
    parameters_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    overhead_bytes: int
    total_bytes: int
    device_capacity_bytes: int
    host_offload_bytes: int
    fits: bool
    def __init__(self, parameters_bytes: _Optional[int] = ..., gradients_bytes: _Optional[int] = ..., optimizer_bytes: _Optional[int] = ..., activations_bytes: _Optional[int] = ..., overhead_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., device_capacity_bytes: _Optional[int] = ..., host_offload_bytes: _Optional[int] = ..., fits: _Optional[bool] = ...) -> None: ...

class PlanDecision(_message.Message):
    __slots__ = ("field", "value", "reason", "overridden")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    reason: str
    overridden: bool
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ..., reason: _Optional[str] = ..., overridden: _Optional[bool] = ...) -> None: ...

class Plan(_message.Message):
    __slots__ = ("method", "zero_stage", "offload_optimizer", "offload_parameters", "precision", "micro_batch_size", "gradient_accumulation_steps", "data_parallel_size", "global_batch_size", "gradient_checkpointing", "torch_compile", "lora", "total_parameters", "trainable_parameters", "memory", "deepspeed_config", "decisions", "distributed_backend", "warnings")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    ZERO_STAGE_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    DATA_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    TORCH_COMPILE_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    DEEPSPEED_CONFIG_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DISTRIBUTED_BACKEND_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    method: _job_pb2.TrainingMethod
    zero_stage: int
    offload_optimizer: OffloadTarget
    offload_parameters: OffloadTarget
    precision: _job_pb2.Precision
    micro_batch_size: int
    gradient_accumulation_steps: int
    data_parallel_size: int
    global_batch_size: int
    gradient_checkpointing: bool
    torch_compile: bool
    lora: _job_pb2.LoraConfig
    total_parameters: int
    trainable_parameters: int
    memory: MemoryEstimate
    deepspeed_config: _struct_pb2.Struct
    decisions: _containers.RepeatedCompositeFieldContainer[PlanDecision]
    distributed_backend: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, method: _Optional[_Union[_job_pb2.TrainingMethod, str]] = ..., zero_stage: _Optional[int] = ..., offload_optimizer: _Optional[_Union[OffloadTarget, str]] = ..., offload_parameters: _Optional[_Union[OffloadTarget, str]] = ..., precision: _Optional[_Union[_job_pb2.Precision, str]] = ..., micro_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., data_parallel_size: _Optional[int] = ..., global_batch_size: _Optional[int] = ..., gradient_checkpointing: _Optional[bool] = ..., torch_compile: _Optional[bool] = ..., lora: _Optional[_Union[_job_pb2.LoraConfig, _Mapping]] = ..., total_parameters: _Optional[int] = ..., trainable_parameters: _Optional[int] = ..., memory: _Optional[_Union[MemoryEstimate, _Mapping]] = ..., deepspeed_config: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[PlanDecision, _Mapping]]] = ..., distributed_backend: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "epoch", "loss", "learning_rate", "tokens_per_second", "samples_per_second", "eta", "mfu", "latest_checkpoint_artifact_id", "latest_checkpoint_step", "metrics", "report_time")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    MFU_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    LATEST_CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    epoch: float
    loss: float
    learning_rate: float
    tokens_per_second: float
    samples_per_second: float
    eta: _duration_pb2.Duration
    mfu: float
    latest_checkpoint_artifact_id: str
    latest_checkpoint_step: int
    metrics: _containers.ScalarMap[str, float]
    report_time: _timestamp_pb2.Timestamp
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., epoch: _Optional[float] = ..., loss: _Optional[float] = ..., learning_rate: _Optional[float] = ..., tokens_per_second: _Optional[float] = ..., samples_per_second: _Optional[float] = ..., eta: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., mfu: _Optional[float] = ..., latest_checkpoint_artifact_id: _Optional[str] = ..., latest_checkpoint_step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("rank", "node_id", "pid", "alive", "exit_code", "signal", "log_path")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    LOG_PATH_FIELD_NUMBER: _ClassVar[int]
    rank: int
    node_id: str
    pid: int
    alive: bool
    exit_code: int
    signal: int
    log_path: str
    def __init__(self, rank: _Optional[int] = ..., node_id: _Optional[str] = ..., pid: _Optional[int] = ..., alive: _Optional[bool] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., log_path: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "job_id", "team", "attempt", "spec", "placement", "plan", "state", "reason", "message", "failure_class", "restarts", "progress", "workers", "executor", "resumed_from_checkpoint", "outputs", "create_time", "start_time", "finish_time", "revision")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    job_id: str
    team: str
    attempt: int
    spec: _job_pb2.JobSpec
    placement: _job_pb2.Placement
    plan: Plan
    state: RunState
    reason: str
    message: str
    failure_class: _job_pb2.FailureClass
    restarts: int
    progress: Progress
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    executor: ExecutorKind
    resumed_from_checkpoint: str
    outputs: _job_pb2.JobOutputs
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    revision: int
    def __init__(self, run_id: _Optional[str] = ..., job_id: _Optional[str] = ..., team: _Optional[str] = ..., attempt: _Optional[int] = ..., spec: _Optional[_Union[_job_pb2.JobSpec, _Mapping]] = ..., placement: _Optional[_Union[_job_pb2.Placement, _Mapping]] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., failure_class: _Optional[_Union[_job_pb2.FailureClass, str]] = ..., restarts: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., executor: _Optional[_Union[ExecutorKind, str]] = ..., resumed_from_checkpoint: _Optional[str] = ..., outputs: _Optional[_Union[_job_pb2.JobOutputs, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...
