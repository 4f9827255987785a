import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.common.v1 import common_pb2 as _common_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as _deployment_pb2
from mlmesh.api.storage.v1 import artifact_pb2 as _artifact_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_KIND_UNSPECIFIED: _ClassVar[JobKind]
    JOB_KIND_TRAIN: _ClassVar[JobKind]
    JOB_KIND_FINETUNE: _ClassVar[JobKind]
    JOB_KIND_COMMAND: _ClassVar[JobKind]
    JOB_KIND_PIPELINE: _ClassVar[JobKind]
    JOB_KIND_REGISTER_MODEL: _ClassVar[JobKind]
    JOB_KIND_DEPLOY_MODEL: _ClassVar[JobKind]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_ADMITTED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
    JOB_STATE_PREEMPTED: _ClassVar[JobState]
    JOB_STATE_RETRYING: _ClassVar[JobState]
    JOB_STATE_SKIPPED: _ClassVar[JobState]

class FailureClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FAILURE_CLASS_UNSPECIFIED: _ClassVar[FailureClass]
    FAILURE_CLASS_USER_ERROR: _ClassVar[FailureClass]
    FAILURE_CLASS_OUT_OF_MEMORY: _ClassVar[FailureClass]
    FAILURE_CLASS_COLLECTIVE_TIMEOUT: _ClassVar[FailureClass]
    FAILURE_CLASS_SIGNAL: _ClassVar[FailureClass]
    FAILURE_CLASS_NODE_LOST: _ClassVar[FailureClass]
    FAILURE_CLASS_PREEMPTED: _ClassVar[FailureClass]
    FAILURE_CLASS_INFRASTRUCTURE: _ClassVar[FailureClass]
    FAILURE_CLASS_DEADLINE_EXCEEDED: _ClassVar[FailureClass]
    FAILURE_CLASS_DEPENDENCY_FAILED: _ClassVar[FailureClass]

class TrainingMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINING_METHOD_UNSPECIFIED: _ClassVar[TrainingMethod]
    TRAINING_METHOD_FULL: _ClassVar[TrainingMethod]
    TRAINING_METHOD_LORA: _ClassVar[TrainingMethod]
    TRAINING_METHOD_QLORA: _ClassVar[TrainingMethod]

class Precision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRECISION_UNSPECIFIED: _ClassVar[Precision]
    PRECISION_BF16: _ClassVar[Precision]
    PRECISION_FP16: _ClassVar[Precision]
    PRECISION_FP32: _ClassVar[Precision]
JOB_KIND_UNSPECIFIED: JobKind
JOB_KIND_TRAIN: JobKind
JOB_KIND_FINETUNE: JobKind
JOB_KIND_COMMAND: JobKind
JOB_KIND_PIPELINE: JobKind
JOB_KIND_REGISTER_MODEL: JobKind
JOB_KIND_DEPLOY_MODEL: JobKind
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_ADMITTED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
JOB_STATE_PREEMPTED: JobState
JOB_STATE_RETRYING: JobState
JOB_STATE_SKIPPED: JobState
FAILURE_CLASS_UNSPECIFIED: FailureClass
FAILURE_CLASS_USER_ERROR: FailureClass
FAILURE_CLASS_OUT_OF_MEMORY: FailureClass
FAILURE_CLASS_COLLECTIVE_TIMEOUT: FailureClass
FAILURE_CLASS_SIGNAL: FailureClass
FAILURE_CLASS_NODE_LOST: FailureClass
FAILURE_CLASS_PREEMPTED: FailureClass
FAILURE_CLASS_INFRASTRUCTURE: FailureClass
FAILURE_CLASS_DEADLINE_EXCEEDED: FailureClass
FAILURE_CLASS_DEPENDENCY_FAILED: FailureClass
TRAINING_METHOD_UNSPECIFIED: TrainingMethod
TRAINING_METHOD_FULL: TrainingMethod
TRAINING_METHOD_LORA: TrainingMethod
TRAINING_METHOD_QLORA: TrainingMethod
PRECISION_UNSPECIFIED: Precision
PRECISION_BF16: Precision
PRECISION_FP16: Precision
PRECISION_FP32: Precision

class WorkerResources(_message.Message):
    __slots__ = ("count", "resources")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    count: int
    resources: _common_pb2.Resources
    def __init__(self, count: _Optional[int] = ..., resources: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ...) -> None: ...

class AcceleratorSelector(_message.Message):
    __slots__ = ("gpu_models", "min_gpu_memory_bytes", "node_selector")
    GPU_MODELS_FIELD_NUMBER: _ClassVar[int]
    MIN_GPU_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    NODE_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    gpu_models: _containers.RepeatedScalarFieldContainer[str]
    min_gpu_memory_bytes: int
    node_selector: _common_pb2.LabelSelector
    def __init__(self, gpu_models: _Optional[_Iterable[str]] = ..., min_gpu_memory_bytes: _Optional[int] = ..., node_selector: _Optional[_Union[_common_pb2.LabelSelector, _Mapping]] = ...) -> None: ...

class PlacementPolicy(_message.Message):
    __slots__ = ("pool_preference", "allow_spot", "required_topology")
    POOL_PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPOT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    pool_preference: _containers.RepeatedScalarFieldContainer[_common_pb2.NodePool]
    allow_spot: bool
    required_topology: _common_pb2.TopologyLevel
    def __init__(self, pool_preference: _Optional[_Iterable[_Union[_common_pb2.NodePool, str]]] = ..., allow_spot: _Optional[bool] = ..., required_topology: _Optional[_Union[_common_pb2.TopologyLevel, str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "initial_backoff", "max_backoff", "backoff_multiplier")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    INITIAL_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_BACKOFF_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    initial_backoff: _duration_pb2.Duration
    max_backoff: _duration_pb2.Duration
    backoff_multiplier: float
    def __init__(self, max_retries: _Optional[int] = ..., initial_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_backoff: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_multiplier: _Optional[float] = ...) -> None: ...

class CheckpointPolicy(_message.Message):
    __slots__ = ("every_n_steps", "every_interval", "retention", "async_save")
    EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVERY_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    RETENTION_FIELD_NUMBER: _ClassVar[int]
    ASYNC_SAVE_FIELD_NUMBER: _ClassVar[int]
    every_n_steps: int
    every_interval: _duration_pb2.Duration
    retention: _artifact_pb2.RetentionPolicy
    async_save: bool
    def __init__(self, every_n_steps: _Optional[int] = ..., every_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., retention: _Optional[_Union[_artifact_pb2.RetentionPolicy, _Mapping]] = ..., async_save: _Optional[bool] = ...) -> None: ...

class CommandSpec(_message.Message):
    __slots__ = ("image", "command", "env", "working_dir")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    working_dir: str
    def __init__(self, image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., working_dir: _Optional[str] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: int
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[int] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("learning_rate", "epochs", "max_steps", "global_batch_size", "max_seq_length", "weight_decay", "warmup_steps", "lr_scheduler", "seed", "eval_every_n_steps", "max_grad_norm", "lora")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    MAX_STEPS_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_N_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    epochs: float
    max_steps: int
    global_batch_size: int
    max_seq_length: int
    weight_decay: float
    warmup_steps: int
    lr_scheduler: str
    seed: int
    eval_every_n_steps: int
    max_grad_norm: float
    lora: LoraConfig
    def __init__(self, learning_rate: _Optional[float] = ..., epochs: _Optional[float] = ..., max_steps: _Optional[int] = ..., global_batch_size: _Optional[int] = ..., max_seq_length: _Optional[int] = ..., weight_decay: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., lr_scheduler: _Optional[str] = ..., seed: _Optional[int] = ..., eval_every_n_steps: _Optional[int] = ..., max_grad_norm: _Optional[float] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ...) -> None: ...

class PlanOverrides(_message.Message):
    __slots__ = ("zero_stage", "offload_optimizer", "offload_parameters", "precision", "micro_batch_size", "gradient_accumulation_steps", "gradient_checkpointing", "torch_compile")
    ZERO_STAGE_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    OFFLOAD_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MICRO_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    TORCH_COMPILE_FIELD_NUMBER: _ClassVar[int]
    zero_stage: int
    offload_optimizer: bool
    offload_parameters: bool
    precision: Precision
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_checkpointing: bool
    torch_compile: bool
    def __init__(self, zero_stage: _Optional[int] = ..., offload_optimizer: _Optional[bool] = ..., offload_parameters: _Optional[bool] = ..., precision: _Optional[_Union[Precision, str]] = ..., micro_batch_size: _Optional[int] = ..., gradient_accumulation_steps: _Optional[int] = ..., gradient_checkpointing: _Optional[bool] = ..., torch_compile: _Optional[bool] = ...) -> None: ...

class TrainerConfig(_message.Message):
    __slots__ = ("model", "dataset", "task", "method", "hyperparameters", "overrides", "column_mapping", "resume_from_checkpoint", "output_model_name", "output_aliases", "max_restarts", "extra")
    class ColumnMappingEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    COLUMN_MAPPING_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_ALIASES_FIELD_NUMBER: _ClassVar[int]
    MAX_RESTARTS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    model: str
    dataset: str
    task: _common_pb2.ModelTask
    method: TrainingMethod
    hyperparameters: Hyperparameters
    overrides: PlanOverrides
    column_mapping: _containers.ScalarMap[str, str]
    resume_from_checkpoint: str
    output_model_name: str
    output_aliases: _containers.RepeatedScalarFieldContainer[str]
    max_restarts: int
    extra: _struct_pb2.Struct
    def __init__(self, model: _Optional[str] = ..., dataset: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.ModelTask, str]] = ..., method: _Optional[_Union[TrainingMethod, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., overrides: _Optional[_Union[PlanOverrides, _Mapping]] = ..., column_mapping: _Optional[_Mapping[str, str]] = ..., resume_from_checkpoint: _Optional[str] = ..., output_model_name: _Optional[str] = ..., output_aliases: _Optional[_Iterable[str]] = ..., max_restarts: _Optional[int] = ..., extra: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RegisterModelSpec(_message.Message):
    __slots__ = ("model_name", "artifact_id", "from_step", "aliases", "description")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    artifact_id: str
    from_step: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    description: str
    def __init__(self, model_name: _Optional[str] = ..., artifact_id: _Optional[str] = ..., from_step: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ...) -> None: ...

class DeployModelSpec(_message.Message):
    __slots__ = ("deployment_name", "deployment", "from_step")
    DEPLOYMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    deployment_name: str
    deployment: _deployment_pb2.DeploymentSpec
    from_step: str
    def __init__(self, deployment_name: _Optional[str] = ..., deployment: _Optional[_Union[_deployment_pb2.DeploymentSpec, _Mapping]] = ..., from_step: _Optional[str] = ...) -> None: ...

class PipelineStep(_message.Message):
    __slots__ = ("name", "depends_on", "spec")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    name: str
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    spec: JobSpec
    def __init__(self, name: _Optional[str] = ..., depends_on: _Optional[_Iterable[str]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class PipelineSpec(_message.Message):
    __slots__ = ("steps",)
    STEPS_FIELD_NUMBER: _ClassVar[int]
    steps: _containers.RepeatedCompositeFieldContainer[PipelineStep]
    def __init__(self, steps: _Optional[_Iterable[_Union[PipelineStep, _Mapping]]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "kind", "team", "queue", "priority_class", "workers", "accelerator", "placement", "retry", "checkpoint", "max_runtime", "labels", "command", "trainer", "pipeline", "register_model", "deploy_model")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_CLASS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ACCELERATOR_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    REGISTER_MODEL_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_MODEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: JobKind
    team: str
    queue: str
    priority_class: str
    workers: WorkerResources
    accelerator: AcceleratorSelector
    placement: PlacementPolicy
    retry: RetryPolicy
    checkpoint: CheckpointPolicy
    max_runtime: _duration_pb2.Duration
    labels: _containers.ScalarMap[str, str]
    command: CommandSpec
    trainer: TrainerConfig
    pipeline: PipelineSpec
    register_model: RegisterModelSpec
    deploy_model: DeployModelSpec
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[JobKind, str]] = ..., team: _Optional[str] = ..., queue: _Optional[str] = ..., priority_class: _Optional[str] = ..., workers: _Optional[_Union[WorkerResources, _Mapping]] = ..., accelerator: _Optional[_Union[AcceleratorSelector, _Mapping]] = ..., placement: _Optional[_Union[PlacementPolicy, _Mapping]] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointPolicy, _Mapping]] = ..., max_runtime: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., command: _Optional[_Union[CommandSpec, _Mapping]] = ..., trainer: _Optional[_Union[TrainerConfig, _Mapping]] = ..., pipeline: _Optional[_Union[PipelineSpec, _Mapping]] = ..., register_model: _Optional[_Union[RegisterModelSpec, _Mapping]] = ..., deploy_model: _Optional[_Union[DeployModelSpec, _Mapping]] = ...) -> None: ...

class WorkerAssignment(_message.Message):
    __slots__ = ("rank", "local_rank", "device_ids", "resources")
    RANK_FIELD_NUMBER: _ClassVar[int]
    LOCAL_RANK_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    local_rank: int
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    resources: _common_pb2.Resources
    def __init__(self, rank: _Optional[int] = ..., local_rank: _Optional[int] = ..., device_ids: _Optional[_Iterable[str]] = ..., resources: _Optional[_Union[_common_pb2.Resources, _Mapping]] = ...) -> None: ...

class NodeAssignment(_message.Message):
    __slots__ = ("node_id", "agent_address", "workers")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    agent_address: str
    workers: _containers.RepeatedCompositeFieldContainer[WorkerAssignment]
    def __init__(self, node_id: _Optional[str] = ..., agent_address: _Optional[str] = ..., workers: _Optional[_Iterable[_Union[WorkerAssignment, _Mapping]]] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("nodes", "world_size", "topology_level", "score", "decide_time")
    NODES_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_LEVEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeAssignment]
    world_size: int
    topology_level: _common_pb2.TopologyLevel
    score: float
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeAssignment, _Mapping]]] = ..., world_size: _Optional[int] = ..., topology_level: _Optional[_Union[_common_pb2.TopologyLevel, str]] = ..., score: _Optional[float] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobTransition(_message.Message):
    __slots__ = ("from_state", "to_state", "reason", "message", "attempt", "transition_time")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    from_state: JobState
    to_state: JobState
    reason: str
    message: str
    attempt: int
    transition_time: _timestamp_pb2.Timestamp
    def __init__(self, from_state: _Optional[_Union[JobState, str]] = ..., to_state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., attempt: _Optional[int] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PipelineStepStatus(_message.Message):
    __slots__ = ("name", "job_id", "state")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    job_id: str
    state: JobState
    def __init__(self, name: _Optional[str] = ..., job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ...) -> None: ...

class JobOutputs(_message.Message):
    __slots__ = ("model_artifact_id", "checkpoint_artifact_id", "model_name", "model_version", "deployment_name", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_NAME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    model_artifact_id: str
    checkpoint_artifact_id: str
    model_name: str
    model_version: int
    deployment_name: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, model_artifact_id: _Optional[str] = ..., checkpoint_artifact_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., deployment_name: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("state", "reason", "message", "failure_class", "attempt", "preemption_count", "admit_time", "start_time", "finish_time", "last_transition_time", "next_retry_time", "placement", "run_id", "borrowing", "outputs", "steps", "history", "traceparent")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PREEMPTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    ADMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    NEXT_RETRY_TIME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    BORROWING_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    reason: str
    message: str
    failure_class: FailureClass
    attempt: int
    preemption_count: int
    admit_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    last_transition_time: _timestamp_pb2.Timestamp
    next_retry_time: _timestamp_pb2.Timestamp
    placement: Placement
    run_id: str
    borrowing: bool
    outputs: JobOutputs
    steps: _containers.RepeatedCompositeFieldContainer[PipelineStepStatus]
    history: _containers.RepeatedCompositeFieldContainer[JobTransition]
    traceparent: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., failure_class: _Optional[_Union[FailureClass, str]] = ..., attempt: _Optional[int] = ..., preemption_count: _Optional[int] = ..., admit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_retry_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placement: _Optional[_Union[Placement, _Mapping]] = ..., run_id: _Optional[str] = ..., borrowing: _Optional[bool] = ..., outputs: _Optional[_Union[JobOutputs, _Mapping]] = ..., steps: _Optional[_Iterable[_Union[PipelineStepStatus, _Mapping]]] = ..., history: _Optional[_Iterable[_Union[JobTransition, _Mapping]]] = ..., traceparent: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("meta", "spec", "status", "parent_job_id", "pipeline_step")
    META_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_STEP_FIELD_NUMBER: _ClassVar[int]
    meta: _common_pb2.ObjectMeta
    spec: JobSpec
    status: JobStatus
    parent_job_id: str
    pipeline_step: str
    def __init__(self, meta: _Optional[_Union[_common_pb2.ObjectMeta, _Mapping]] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., status: _Optional[_Union[JobStatus, _Mapping]] = ..., parent_job_id: _Optional[str] = ..., pipeline_step: _Optional[str] = ...) -> None: ...
