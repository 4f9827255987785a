"""`mlmesh models register|ls|get|alias`: the model registry (served by the storage service), and
`deploy|undeploy` (the inference gateway's deployments, in `mlmesh.cli.deployments`)."""

from __future__ import annotations

import re
import sys
import time
import uuid
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from mlmesh.api.common.v1 import common_pb2
from mlmesh.api.storage.v1 import model_registry_pb2 as mr
from mlmesh.api.storage.v1 import model_registry_service_pb2 as api
from mlmesh.cli.artifacts import parse_pairs
from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, age, enum_short, print_json, registry, to_dict
from mlmesh.cli.output import CliError, console, print_table
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, Client

models_app = typer.Typer(
    help="Model registry: versions registered from artifacts, and movable aliases.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

NameArg = Annotated[str, typer.Argument(help="Model name, [a-z0-9_-].", show_default=False)]
_REF = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>[^:@]*)|@(?P<alias>[^:@]*))?$")


def parse_task(text: str) -> int:
    name = "MODEL_TASK_" + text.strip().upper().replace("-", "_")
    if name in common_pb2.ModelTask.DESCRIPTOR.values_by_name and name != "MODEL_TASK_UNSPECIFIED":
        return common_pb2.ModelTask.Value(name)
    raise CliError(
        f"--task: unknown task {text!r}", hint="one of text-generation|text-classification|embedding", exit_code=2
    )


def task_name(task: int) -> str:
    return enum_short(common_pb2.ModelTask, task, "MODEL_TASK_").lower().replace("_", "-") if task else ""


def weights_name(kind: int) -> str:
    return enum_short(mr.WeightsKind, kind, "WEIGHTS_KIND_").lower() if kind else ""


def parse_metrics(items: list[str]) -> dict[str, float]:
    metrics = {}
    for key, value in parse_pairs(items, "--metric").items():
        try:
            metrics[key] = float(value)
        except ValueError:
            raise CliError(f"--metric: {key}={value!r} is not a number", exit_code=2) from None
    return metrics


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`name` -> (name, None, None); `name:3` -> (name, 3, None), `name:latest` -> (name, 0, None);
    `name@prod` -> (name, None, "prod")."""
    m = _REF.match(ref.strip())
    if not m:
        raise CliError(f"bad model reference {ref!r}", hint="NAME, NAME:VERSION or NAME@ALIAS", exit_code=2)
    name, version, alias = m.group("name"), m.group("version"), m.group("alias")
    if alias is not None:
        if not alias:
            raise CliError(f"bad model reference {ref!r}: empty alias", exit_code=2)
        return name, None, alias
    if version is None:
        return name, None, None
    if version == "latest":
        return name, 0, None
    if not version.isdigit() or int(version) < 1:
        raise CliError(f"bad model reference {ref!r}: the version is a number >= 1 or 'latest'", exit_code=2)
    return name, int(version), None


def _when(ts) -> str:
    if not ts.seconds and not ts.nanos:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts.seconds)) + f" ({age(ts)} ago)"


def _kv(values: dict, fmt=str) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in sorted(values.items()))


def _print_version(v: mr.ModelVersion) -> None:
    lineage = v.lineage
    rows = [
        ("model", f"{v.name}:{v.version}"),
        ("team", v.team),
        ("artifact", v.artifact_id),
        ("task", task_name(v.task)),
        ("weights", weights_name(v.weights_kind)),
        ("base model", v.base_model),
        ("adapter", v.adapter_type),
        ("framework", v.framework),
        ("aliases", ", ".join(v.aliases)),
        ("metrics", _kv(dict(v.metrics), lambda x: f"{x:g}")),
        ("job", lineage.job_id),
        ("run", lineage.run_id),
        ("dataset", lineage.dataset_artifact_id),
        ("checkpoint", lineage.checkpoint_artifact_id),
        ("code", lineage.code_version),
        ("labels", _kv(dict(v.labels))),
        ("properties", _kv(dict(v.properties))),
        ("description", v.description),
        ("created", _when(v.create_time)),
    ]
    grid = Table.grid(padding=(0, 2))
    for key, value in rows:
        if value:
            grid.add_row(Text(key, style="bold"), Text(str(value)))
    console.print(grid)


@models_app.command("register")
def register_version(
    name: NameArg,
    artifact: Annotated[
        str, typer.Option("--artifact", help="Artifact id holding the weights (kind model).", show_default=False)
    ],
    task: Annotated[str | None, typer.Option("--task", help="text-generation|text-classification|embedding.")] = None,
    framework: Annotated[
        str | None, typer.Option("--framework", help="What loads it, e.g. transformers, peft.")
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model",
            help="Makes this an adapter over REF: model://NAME@VERSION|ALIAS, artifact://ID or a Hugging Face name.",
        ),
    ] = None,
    adapter_type: Annotated[str, typer.Option("--adapter-type", help="Adapter type (with --base-model).")] = "lora",
    metric: Annotated[list[str] | None, typer.Option("--metric", "-m", help="name=value (repeatable).")] = None,
    alias: Annotated[
        list[str] | None, typer.Option("--alias", "-a", help="Point this alias at the new version (repeatable).")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable).")] = None,
    prop: Annotated[
        list[str] | None, typer.Option("--property", help="key=value the server needs, e.g. num_labels=2 (repeatable).")
    ] = None,
    description: Annotated[str | None, typer.Option("--description", help="Free text.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Lineage: the job that produced it.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Lineage: the dataset artifact id.")] = None,
    code_version: Annotated[str | None, typer.Option("--code-version", help="Lineage: git commit or version.")] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key: repeating it returns the same version.")
    ] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Register a new version of a model from an artifact; prints NAME:VERSION."""
    version = mr.ModelVersion(
        name=name,
        artifact_id=artifact,
        weights_kind=mr.WEIGHTS_KIND_ADAPTER if base_model else mr.WEIGHTS_KIND_FULL,
        base_model=base_model or "",
        adapter_type=adapter_type if base_model else "",
        framework=framework or "",
        task=parse_task(task) if task else common_pb2.MODEL_TASK_UNSPECIFIED,
        metrics=parse_metrics(metric or []),
        labels=parse_pairs(label or [], "--label"),
        properties=parse_pairs(prop or [], "--property"),
        description=description or "",
        lineage=mr.Lineage(job_id=job or "", dataset_artifact_id=dataset or "", code_version=code_version or ""),
    )
    # Always send a key: the client retries on UNAVAILABLE, and a retry must not add a second version.
    request = api.RegisterModelVersionRequest(
        model_version=version, aliases=list(alias or []), request_id=request_id or uuid.uuid4().hex
    )
    with registry(endpoint, timeout) as client:
        got = client.call(client.stub.RegisterModelVersion, request).model_version
    if json_output:
        print_json(to_dict(got))
        return
    sys.stdout.write(f"{got.name}:{got.version}\n")


def _all_models(client: Client, task: int) -> list[mr.Model]:
    models: list[mr.Model] = []
    request = api.ListModelsRequest(task=task, page_size=1000)
    while True:
        page = client.call(client.stub.ListModels, request)
        models.extend(page.models)
        if not page.next_page_token:
            return models
        request.page_token = page.next_page_token


@models_app.command("ls")
def list_models(
    task: Annotated[
        str | None, typer.Option("--task", help="Only text-generation|text-classification|embedding.")
    ] = None,
    deployed: Annotated[
        bool, typer.Option("--deployed", help="List the deployments serving them (the inference gateway).")
    ] = False,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """List your team's models with their latest version and aliases, or with --deployed the
    deployments serving them."""
    if deployed:
        from mlmesh.cli import deployments

        with deployments.gateway(endpoint, timeout) as client:
            found = deployments.list_deployments(client)
        deployments.print_deployments(found, json_output)
        return
    with registry(endpoint, timeout) as client:
        models = _all_models(client, parse_task(task) if task else 0)
    if json_output:
        print_json(to_dict(api.ListModelsResponse(models=models)))
        return
    now = time.time()
    print_table(
        "models",
        ["name", "task", "latest", "versions", "aliases", "updated"],
        [
            (
                m.name,
                task_name(m.task),
                m.latest_version or "",
                m.version_count,
                ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())),
                age(m.update_time, now),
            )
            for m in models
        ],
    )


@models_app.command("get")
def get_model(
    ref: Annotated[
        str, typer.Argument(help="NAME (the model), NAME:VERSION, NAME:latest or NAME@ALIAS.", show_default=False)
    ],
    limit: Annotated[int, typer.Option("--limit", "-n", help="NAME only: at most this many versions.", min=1)] = 20,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Show one version (NAME:VERSION, NAME@ALIAS), or a model with its aliases and newest versions."""
    name, version, alias = parse_ref(ref)
    with registry(endpoint, timeout) as client:
        if alias is not None:
            got = client.call(client.stub.ResolveAlias, api.ResolveAliasRequest(name=name, alias=alias)).model_version
        elif version is not None:
            got = client.call(
                client.stub.GetModelVersion, api.GetModelVersionRequest(name=name, version=version)
            ).model_version
        else:
            model = client.call(client.stub.GetModel, api.GetModelRequest(name=name)).model
            page = client.call(client.stub.ListModelVersions, api.ListModelVersionsRequest(name=name, page_size=limit))
            versions = list(page.model_versions)[:limit]
            if json_output:
                print_json({"model": to_dict(model), "model_versions": [to_dict(v) for v in versions]})
                return
            _print_model(model, versions)
            return
    if json_output:
        print_json(to_dict(got))
        return
    _print_version(got)


def _print_model(model: mr.Model, versions: list[mr.ModelVersion]) -> None:
    grid = Table.grid(padding=(0, 2))
    for key, value in (
        ("model", model.name),
        ("team", model.team),
        ("task", task_name(model.task)),
        ("latest", str(model.latest_version or "")),
        ("versions", str(model.version_count)),
        ("aliases", ", ".join(f"{a}→{v}" for a, v in sorted(model.aliases.items()))),
        ("created", _when(model.create_time)),
        ("updated", _when(model.update_time)),
    ):
        if value:
            grid.add_row(Text(key, style="bold"), Text(value))
    console.print(grid)
    if versions:
        now = time.time()
        print_table(
            "versions",
            ["version", "aliases", "weights", "artifact", "metrics", "age"],
            [
                (
                    v.version,
                    ", ".join(v.aliases),
                    weights_name(v.weights_kind) + (f" over {v.base_model}" if v.base_model else ""),
                    v.artifact_id,
                    _kv(dict(v.metrics), lambda x: f"{x:g}"),
                    age(v.create_time, now),
                )
                for v in versions
            ],
        )


@models_app.command("alias")
def set_alias(
    name: NameArg,
    alias: Annotated[str, typer.Argument(help="Alias, e.g. prod or canary.", show_default=False)],
    version: Annotated[int, typer.Argument(help="Version to point it at.", min=1, show_default=False)],
    expect: Annotated[
        int | None,
        typer.Option("--expect", help="Move it only if it points at this version now.", min=1),
    ] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Point an alias at a version, atomically."""
    request = api.SetAliasRequest(name=name, alias=alias, version=version, expected_current_version=expect or 0)
    with registry(endpoint, timeout) as client:
        out = client.call(client.stub.SetAlias, request)
    if json_output:
        print_json(to_dict(out))
        return
    was = f"was {out.previous_version}" if out.previous_version else "new"
    console.print(f"{name}@{alias} → {out.model_version.version or version} ({was})", markup=False)


def register(app: typer.Typer) -> None:
    from mlmesh.cli import deployments

    deployments.register(models_app)
    app.add_typer(models_app, name="models")
