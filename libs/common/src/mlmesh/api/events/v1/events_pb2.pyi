import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mlmesh.api.fabric.v1 import node_pb2 as _node_pb2
from mlmesh.api.gateway.v1 import deployment_pb2 as _deployment_pb2
from mlmesh.api.scheduler.v1 import job_pb2 as _job_pb2
from mlmesh.api.storage.v1 import artifact_pb2 as _artifact_pb2
from mlmesh.api.storage.v1 import model_registry_pb2 as _model_registry_pb2
from mlmesh.api.telemetry.v1 import alert_pb2 as _alert_pb2
from mlmesh.api.trainer.v1 import run_pb2 as _run_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobStateChanged(_message.Message):
    __slots__ = ("job_id", "team", "queue", "kind", "parent_job_id", "from_state", "to_state", "reason", "message", "attempt", "failure_class", "revision", "transition_time", "placement", "labels", "outputs")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARENT_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    team: str
    queue: str
    kind: _job_pb2.JobKind
    parent_job_id: str
    from_state: _job_pb2.JobState
    to_state: _job_pb2.JobState
    reason: str
    message: str
    attempt: int
    failure_class: _job_pb2.FailureClass
    revision: int
    transition_time: _timestamp_pb2.Timestamp
    placement: _job_pb2.Placement
    labels: _containers.ScalarMap[str, str]
    outputs: _job_pb2.JobOutputs
    def __init__(self, job_id: _Optional[str] = ..., team: _Optional[str] = ..., queue: _Optional[str] = ..., kind: _Optional[_Union[_job_pb2.JobKind, str]] = ..., parent_job_id: _Optional[str] = ..., from_state: _Optional[_Union[_job_pb2.JobState, str]] = ..., to_state: _Optional[_Union[_job_pb2.JobState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., attempt: _Optional[int] = ..., failure_class: _Optional[_Union[_job_pb2.FailureClass, str]] = ..., revision: _Optional[int] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placement: _Optional[_Union[_job_pb2.Placement, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., outputs: _Optional[_Union[_job_pb2.JobOutputs, _Mapping]] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("job_id", "team", "run_id", "attempt", "progress")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    team: str
    run_id: str
    attempt: int
    progress: _run_pb2.Progress
    def __init__(self, job_id: _Optional[str] = ..., team: _Optional[str] = ..., run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., progress: _Optional[_Union[_run_pb2.Progress, _Mapping]] = ...) -> None: ...

class RunStateChanged(_message.Message):
    __slots__ = ("job_id", "team", "run_id", "attempt", "from_state", "to_state", "reason", "message", "failure_class", "restarts", "outputs", "transition_time")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_CLASS_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    team: str
    run_id: str
    attempt: int
    from_state: _run_pb2.RunState
    to_state: _run_pb2.RunState
    reason: str
    message: str
    failure_class: _job_pb2.FailureClass
    restarts: int
    outputs: _job_pb2.JobOutputs
    transition_time: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., team: _Optional[str] = ..., run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., from_state: _Optional[_Union[_run_pb2.RunState, str]] = ..., to_state: _Optional[_Union[_run_pb2.RunState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., failure_class: _Optional[_Union[_job_pb2.FailureClass, str]] = ..., restarts: _Optional[int] = ..., outputs: _Optional[_Union[_job_pb2.JobOutputs, _Mapping]] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NodeHeartbeat(_message.Message):
    __slots__ = ("node_id", "incarnation", "sequence", "utilization", "unhealthy_device_ids", "send_time")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    incarnation: int
    sequence: int
    utilization: _node_pb2.NodeUtilization
    unhealthy_device_ids: _containers.RepeatedScalarFieldContainer[str]
    send_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., incarnation: _Optional[int] = ..., sequence: _Optional[int] = ..., utilization: _Optional[_Union[_node_pb2.NodeUtilization, _Mapping]] = ..., unhealthy_device_ids: _Optional[_Iterable[str]] = ..., send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class NodeStateChanged(_message.Message):
    __slots__ = ("node_id", "from_state", "to_state", "reason", "message", "incarnation", "transition_time", "labels", "job_ids")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    from_state: _node_pb2.NodeState
    to_state: _node_pb2.NodeState
    reason: str
    message: str
    incarnation: int
    transition_time: _timestamp_pb2.Timestamp
    labels: _node_pb2.NodeLabels
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., from_state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., to_state: _Optional[_Union[_node_pb2.NodeState, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., incarnation: _Optional[int] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Union[_node_pb2.NodeLabels, _Mapping]] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WorkerExited(_message.Message):
    __slots__ = ("node_id", "job_id", "run_id", "attempt", "rank", "pid", "exit_code", "signal", "stopped_by_agent", "exit_time")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STOPPED_BY_AGENT_FIELD_NUMBER: _ClassVar[int]
    EXIT_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    job_id: str
    run_id: str
    attempt: int
    rank: int
    pid: int
    exit_code: int
    signal: int
    stopped_by_agent: bool
    exit_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., job_id: _Optional[str] = ..., run_id: _Optional[str] = ..., attempt: _Optional[int] = ..., rank: _Optional[int] = ..., pid: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., stopped_by_agent: _Optional[bool] = ..., exit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ArtifactCommitted(_message.Message):
    __slots__ = ("artifact",)
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    artifact: _artifact_pb2.Artifact
    def __init__(self, artifact: _Optional[_Union[_artifact_pb2.Artifact, _Mapping]] = ...) -> None: ...

class ArtifactDeleted(_message.Message):
    __slots__ = ("artifact_id", "team", "kind", "job_id", "reason", "delete_time")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    team: str
    kind: _artifact_pb2.ArtifactKind
    job_id: str
    reason: str
    delete_time: _timestamp_pb2.Timestamp
    def __init__(self, artifact_id: _Optional[str] = ..., team: _Optional[str] = ..., kind: _Optional[_Union[_artifact_pb2.ArtifactKind, str]] = ..., job_id: _Optional[str] = ..., reason: _Optional[str] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ArtifactTierChanged(_message.Message):
    __slots__ = ("artifact_id", "team", "from_tier", "to_tier", "reason", "moved_bytes", "change_time")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    FROM_TIER_FIELD_NUMBER: _ClassVar[int]
    TO_TIER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MOVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    team: str
    from_tier: _artifact_pb2.StorageTier
    to_tier: _artifact_pb2.StorageTier
    reason: str
    moved_bytes: int
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, artifact_id: _Optional[str] = ..., team: _Optional[str] = ..., from_tier: _Optional[_Union[_artifact_pb2.StorageTier, str]] = ..., to_tier: _Optional[_Union[_artifact_pb2.StorageTier, str]] = ..., reason: _Optional[str] = ..., moved_bytes: _Optional[int] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ModelVersionRegistered(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: _model_registry_pb2.ModelVersion
    def __init__(self, model_version: _Optional[_Union[_model_registry_pb2.ModelVersion, _Mapping]] = ...) -> None: ...

class ModelAliasChanged(_message.Message):
    __slots__ = ("name", "team", "alias", "version", "previous_version", "change_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEAM_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    team: str
    alias: str
    version: int
    previous_version: int
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., team: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeploymentChanged(_message.Message):
    __slots__ = ("deployment", "from_state", "reason", "change_time")
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    deployment: _deployment_pb2.Deployment
    from_state: _deployment_pb2.DeploymentState
    reason: str
    change_time: _timestamp_pb2.Timestamp
    def __init__(self, deployment: _Optional[_Union[_deployment_pb2.Deployment, _Mapping]] = ..., from_state: _Optional[_Union[_deployment_pb2.DeploymentState, str]] = ..., reason: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AlertFired(_message.Message):
    __slots__ = ("alert",)
    ALERT_FIELD_NUMBER: _ClassVar[int]
    alert: _alert_pb2.Alert
    def __init__(self, alert: _Optional[_Union[_alert_pb2.Alert, _Mapping]] = ...) -> None: ...

class AlertResolved(_message.Message):
    __slots__ = ("alert",)
    ALERT_FIELD_NUMBER: _ClassVar[int]
    alert: _alert_pb2.Alert
    def __init__(self, alert: _Optional[_Union[_alert_pb2.Alert, _Mapping]] = ...) -> None: ...
