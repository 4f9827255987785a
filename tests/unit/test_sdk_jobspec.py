"""Job YAML -> JobSpec: the friendly forms, units, and one-line errors that name the YAML path."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlmesh.api.scheduler.v1 import job_pb2
from mlmesh.sdk.jobspec import JobSpecError, load_job_spec, parse_cpu, parse_duration, parse_job_yaml, parse_memory

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
K = job_pb2


def _error(text: str) -> str:
    with pytest.raises(JobSpecError) as info:
        parse_job_yaml(text)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- units ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16Gi", 16 << 30),
        ("512Mi", 512 << 20),
        ("1Ki", 1024),
        ("2Ti", 2 << 40),
        ("1G", 10**9),
        ("3M", 3 * 10**6),
        ("4K", 4000),
        ("1.5Gi", 3 << 29),
        ("1000", 1000),
        (2048, 2048),
    ],
)
def test_memory_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["16GG", "Gi", "-1Gi", "16 gigs", "", True, None, 1.5])
def test_bad_memory_is_rejected(text):
    with pytest.raises(ValueError):
        parse_memory(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("4", 4000), ("500m", 500), ("0.5", 500), (2, 2000), (0.25, 250), ("1.5", 1500)]
)
def test_cpu_units(text, expected):
    assert parse_cpu(text) == expected


@pytest.mark.parametrize("text", ["4 cores", "m", "0.0001", "-1", "1.5m", False])
def test_bad_cpu_is_rejected(text):
    with pytest.raises(ValueError):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("10s", 10), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200), ("1d", 86400), (45, 45)]
)
def test_durations(text, expected):
    assert parse_duration(text) == pytest.approx(expected)


# --- friendly forms ------------------------------------------------------------------------------


def test_command_job_friendly_forms():
    spec = parse_job_yaml(
        """
name: prep
kind: command
queue: team-a
priority_class: preprocessing
labels: {owner: alice, version: 2, nightly: true}
workers: {count: 2, gpus: 1, cpu: "500m", memory: 16Gi}
command: ["python", "x.py", 3]
retry: {max_retries: 2, initial_backoff: 10s, max_backoff: 1m}
max_runtime: 2h
"""
    )
    assert spec.name == "prep" and spec.kind == K.JOB_KIND_COMMAND
    assert spec.queue == "team-a" and spec.priority_class == "preprocessing"
    assert dict(spec.labels) == {"owner": "alice", "version": "2", "nightly": "true"}
    assert spec.workers.count == 2
    r = spec.workers.resources
    assert (r.gpus, r.cpu_millis, r.memory_bytes) == (1, 500, 16 << 30)
    assert list(spec.command.command) == ["python", "x.py", "3"]
    assert spec.retry.max_retries == 2
    assert spec.retry.initial_backoff.seconds == 10 and spec.retry.max_backoff.seconds == 60
    assert spec.max_runtime.seconds == 7200


def test_command_as_mapping_with_env_and_as_a_string():
    spec = parse_job_yaml(
        "kind: command\ncommand: {argv: [python, -c, 'print(1)'], env: {A: 1, B: x}, working_dir: /tmp}\n"
    )
    assert list(spec.command.command) == ["python", "-c", "print(1)"]
    assert dict(spec.command.env) == {"A": "1", "B": "x"} and spec.command.working_dir == "/tmp"
    spec = parse_job_yaml("kind: command\ncommand: python -c \"print('a b')\"\n")
    assert list(spec.command.command) == ["python", "-c", "print('a b')"]


def test_workers_count_defaults_to_one_and_proto_form_is_accepted():
    assert parse_job_yaml("kind: command\nworkers: {cpu: 2}\n").workers.count == 1
    spec = parse_job_yaml("kind: command\nworkers: {count: 3, resources: {gpus: 2, cpu_millis: 4, memoryBytes: 1Gi}}\n")
    assert spec.workers.count == 3
    r = spec.workers.resources
    assert (r.gpus, r.cpu_millis, r.memory_bytes) == (2, 4, 1 << 30)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("command", K.JOB_KIND_COMMAND),
        ("train", K.JOB_KIND_TRAIN),
        ("finetune", K.JOB_KIND_FINETUNE),
        ("pipeline", K.JOB_KIND_PIPELINE),
        ("JOB_KIND_TRAIN", K.JOB_KIND_TRAIN),
        ("Command", K.JOB_KIND_COMMAND),
    ],
)
def test_kinds(kind, expected):
    assert parse_job_yaml(f"kind: {kind}\n").kind == expected


def test_trainer_is_proto3_json_with_short_enum_names():
    spec = parse_job_yaml(
        """
kind: finetune
workers: {gpus: 1}
accelerator: {gpu_models: [H100], min_gpu_memory_bytes: 40Gi}
trainer:
  model: builtin:tiny-bert
  dataset: file:///data/train.jsonl
  task: text_classification
  method: TRAINING_METHOD_LORA
  hyperparameters: {learningRate: 0.0002, max_steps: 100, lora: {rank: 8, target_modules: [query, value]}}
  overrides: {precision: bf16, zero_stage: 2}
  column_mapping: {text: sentence}
  extra: {anything: [1, 2, {x: y}]}
checkpoint: {every_n_steps: 50, every_interval: 5m}
"""
    )
    t = spec.trainer
    assert t.model == "builtin:tiny-bert" and t.task == 2  # MODEL_TASK_TEXT_CLASSIFICATION
    assert t.method == K.TRAINING_METHOD_LORA
    assert t.hyperparameters.learning_rate == pytest.approx(2e-4) and t.hyperparameters.max_steps == 100
    assert list(t.hyperparameters.lora.target_modules) == ["query", "value"]
    assert t.overrides.precision == K.PRECISION_BF16 and t.overrides.zero_stage == 2
    assert dict(t.column_mapping) == {"text": "sentence"}
    assert t.extra["anything"][2]["x"] == "y"
    assert spec.accelerator.min_gpu_memory_bytes == 40 << 30
    assert spec.checkpoint.every_interval.seconds == 300


def test_pipeline_steps_use_the_friendly_forms_too():
    spec = parse_job_yaml(
        """
name: p
kind: pipeline
pipeline:
  steps:
    - {name: prep, spec: {kind: command, workers: {cpu: 1}, command: [python, prep.py]}}
    - name: train
      depends_on: prep
      spec: {kind: command, workers: {count: 2, memory: 2Gi, cpu: 2}, command: [python, train.py]}
"""
    )
    prep, train = spec.pipeline.steps
    assert prep.spec.workers.resources.cpu_millis == 1000
    assert list(train.depends_on) == ["prep"]
    assert train.spec.workers.count == 2 and train.spec.workers.resources.memory_bytes == 2 << 30


# --- errors name the path ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: command\nworkers: {memory: 16GG}\n", 'workers.memory: cannot parse "16GG"'),
        ("kind: command\nworkers: {cpu: lots}\n", 'workers.cpu: cannot parse "lots"'),
        ("kind: command\nworkers: {count: two}\n", "workers.count: expected a whole number"),
        ("kind: command\nworkers: {gpu: 1}\n", 'workers.gpu: unknown field; did you mean "gpus"?'),
        ("kind: batch\n", 'kind: unknown value "batch"; expected one of train, finetune, command, pipeline'),
        ("kind: command\nworkrs: {count: 1}\n", 'workrs: unknown field; did you mean "workers"?'),
        ("kind: command\nretry: {initial_backoff: soon}\n", 'retry.initial_backoff: cannot parse duration "soon"'),
        ("kind: command\nretry: {max_retries: 1.5}\n", "retry.max_retries: expected a whole number"),
        ("kind: command\ncommand: {argv: [python, [x]]}\n", "command.argv[1]: expected a string"),
        ("kind: command\ncommand: {args: [python]}\n", "command.args: unknown field"),
        ("kind: command\nlabels: [a, b]\n", "labels: expected a mapping"),
        ("kind: command\nname: 12\n", "name: expected a string"),
        ("kind: train\ntrainer: {model: x, learning_rate: 0.1}\n", "trainer.learning_rate: unknown field"),
        ("kind: train\ntrainer: {method: dpo}\n", 'trainer.method: unknown value "dpo"; expected one of full, lora'),
        (
            "kind: pipeline\npipeline: {steps: [{name: a, spec: {kind: command, workers: {memory: 1XB}}}]}\n",
            'pipeline.steps[0].spec.workers.memory: cannot parse "1XB"',
        ),
        ("kind: command\nplacement: {allow_spot: yes please}\n", "placement.allow_spot: expected true or false"),
    ],
)
def test_errors_name_the_yaml_path(text, expected):
    assert _error(text).startswith(expected)


def test_not_a_mapping_empty_and_malformed_yaml():
    assert "a mapping of JobSpec fields" in _error("- a\n- b\n")
    assert "is empty" in _error("")
    message = _error("kind: command\nworkers: {count: 2\n")
    assert "not valid YAML at line" in message


def test_unreadable_file(tmp_path):
    with pytest.raises(JobSpecError, match="cannot read"):
        load_job_spec(tmp_path / "missing.yaml")


# --- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["command.yaml", "pipeline.yaml"])
def test_examples_load_and_pass_the_schedulers_validation(name):
    spec = load_job_spec(EXAMPLES / name)
    assert spec.name
    validation = pytest.importorskip("mlmesh.scheduler.domain.validation")
    spec.team = "team-a"
    spec.queue = spec.queue or "qa"
    catalog = validation.Catalog(
        queues={"qa": "team-a"}, priority_classes=frozenset({"training", "inference", "preprocessing"})
    )
    assert validation.validate_spec(spec, catalog) == {}


def test_command_example_is_a_two_worker_cpu_job():
    spec = load_job_spec(EXAMPLES / "command.yaml")
    assert spec.kind == K.JOB_KIND_COMMAND and spec.workers.count == 2
    assert spec.workers.resources.gpus == 0 and spec.workers.resources.cpu_millis > 0
    assert "MLMESH_RANK" in " ".join(spec.command.command)


def test_pipeline_example_is_prep_train_eval():
    spec = load_job_spec(EXAMPLES / "pipeline.yaml")
    steps = {s.name: list(s.depends_on) for s in spec.pipeline.steps}
    assert steps == {"prep": [], "train": ["prep"], "eval": ["train"]}


def test_relative_file_references_resolve_against_the_job_file(tmp_path):
    from mlmesh.sdk.jobspec import load_job_spec

    (tmp_path / "jobs").mkdir()
    job = tmp_path / "jobs" / "ft.yaml"
    job.write_text("name: ft\nkind: finetune\ntrainer: {model: 'builtin:minilm', dataset: 'file:../data/x.jsonl'}\n")
    spec = load_job_spec(job)
    assert spec.trainer.dataset == f"file://{(tmp_path / 'data' / 'x.jsonl').resolve()}"
    assert spec.trainer.model == "builtin:minilm"
    job.write_text("name: ft\nkind: finetune\ntrainer: {model: 'file:///abs/m', dataset: 'artifact://a1'}\n")
    spec = load_job_spec(job)
    assert (spec.trainer.model, spec.trainer.dataset) == ("file:///abs/m", "artifact://a1")


def test_shipped_finetune_example_parses_with_its_dataset():
    from pathlib import Path

    from mlmesh.sdk.jobspec import load_job_spec

    root = Path(__file__).resolve().parents[2]
    spec = load_job_spec(root / "examples" / "finetune-minilm.yaml")
    assert Path(spec.trainer.dataset.removeprefix("file://")).is_file()
    assert spec.trainer.output_model_name == "topics"
