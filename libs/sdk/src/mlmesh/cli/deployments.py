"""`mlmesh models deploy|undeploy|ls --deployed`: registry versions served by the inference gateway."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from google.protobuf import field_mask_pb2

from mlmesh.api.gateway.v1 import deployment_pb2 as d
from mlmesh.api.gateway.v1 import deployment_service_pb2 as api
from mlmesh.cli.artifacts import parse_pairs
from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, age, enum_short, print_json, to_dict
from mlmesh.cli.output import CliError, console, print_table
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S, Client, deployment_client

POLL_S = 0.5
DONE = (d.DEPLOYMENT_STATE_READY, d.DEPLOYMENT_STATE_FAILED, d.DEPLOYMENT_STATE_DELETED)


def state_name(state: int) -> str:
    return enum_short(d.DeploymentState, state, "DEPLOYMENT_STATE_").lower()


def model_ref(text: str) -> d.ModelRef:
    from mlmesh.cli.models import parse_ref

    name, version, alias = parse_ref(text)
    ref = d.ModelRef(name=name)
    if alias:
        ref.alias = alias
    elif version:
        ref.version = version
    return ref


def _canary_ref(model: d.ModelRef, text: str) -> d.ModelRef:
    """`--canary 3`, `--canary @next` or `--canary name:3` (the same model)."""
    if text.isdigit():
        return d.ModelRef(name=model.name, version=int(text))
    if text.startswith("@"):
        return d.ModelRef(name=model.name, alias=text[1:])
    return model_ref(text)


def gateway(endpoint: str | None, timeout: float) -> Client:
    client = deployment_client(endpoint)
    client.default_timeout = timeout
    return client


def _versions(dep: d.Deployment) -> str:
    s = dep.status
    if not s.model_version:
        return ""
    text = f"v{s.model_version}"
    if s.canary_version:
        text += f" + v{s.canary_version} ({dep.spec.canary.percent}%)"
    return text


def watch(client: Client, name: str, timeout: float, until=DONE) -> d.Deployment:
    """Poll a deployment, printing each state change with the time it took, until it settles."""
    start = time.monotonic()
    last = None
    while True:
        dep = client.call(client.stub.GetDeployment, api.GetDeploymentRequest(name=name)).deployment
        seen = (dep.status.state, dep.status.reason, dep.status.message)
        if seen != last:
            last = seen
            detail = f" ({dep.status.reason}: {dep.status.message})" if dep.status.message else ""
            console.print(
                f"[{time.monotonic() - start:5.1f}s] {name}: {state_name(dep.status.state)}{detail}", markup=False
            )
        if dep.status.state in until and not (
            dep.status.state == d.DEPLOYMENT_STATE_READY and dep.status.reason == "SpecUpdated"
        ):
            return dep
        if time.monotonic() - start > timeout:
            raise CliError(
                f"{name} is still {state_name(dep.status.state)} after {timeout:.0f}s",
                hint="mlmesh models ls --deployed",
            )
        time.sleep(POLL_S)


def deploy(
    ref: Annotated[
        str, typer.Argument(help="NAME (latest), NAME:VERSION or NAME@ALIAS (follows the alias).", show_default=False)
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", help="Deployment name (the inference URL's model); default: the model's name."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option("--task", help="text-generation|text-classification|embedding; default: the registry's."),
    ] = None,
    instances: Annotated[int, typer.Option("--instances", help="Triton model instances.", min=1, max=64)] = 1,
    gpu: Annotated[bool, typer.Option("--gpu/--cpu", help="Instance kind.")] = False,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Dynamic batching: largest batch.", min=1, max=1024)
    ] = 8,
    cache_ttl: Annotated[
        float, typer.Option("--cache-ttl", help="Result-cache TTL in seconds; 0 = not cached.", min=0)
    ] = 60.0,
    canary: Annotated[str | None, typer.Option("--canary", help="Canary version: N, @ALIAS or NAME:N.")] = None,
    canary_percent: Annotated[
        int, typer.Option("--canary-percent", help="Share of traffic to the canary.", min=0, max=100)
    ] = 10,
    sticky_key: Annotated[str, typer.Option("--sticky-key", help="Header whose value keeps a caller on one arm.")] = "",
    rate: Annotated[
        float, typer.Option("--rate-limit", help="Requests/s for this deployment; 0 = the team's.", min=0)
    ] = 0.0,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Task default KEY=VALUE, e.g. max_new_tokens=32.")
    ] = None,
    update: Annotated[
        bool, typer.Option("--update", help="Change the existing deployment NAME instead of creating it.")
    ] = False,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it is ready or failed.")
    ] = True,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Serve a registry version through the inference gateway (Triton), or change a deployment."""
    from mlmesh.cli.models import parse_task

    model = model_ref(ref)
    spec = d.DeploymentSpec(
        model=model,
        task=parse_task(task) if task else 0,
        instance_count=instances,
        instance_kind=d.INSTANCE_KIND_GPU if gpu else d.INSTANCE_KIND_CPU,
    )
    spec.batching.max_batch_size = max_batch
    spec.batching.dynamic_batching = True
    spec.cache_ttl.FromMilliseconds(int(cache_ttl * 1000))
    spec.rate_limit.requests_per_second = rate
    spec.parameters.update(parse_pairs(param or [], "--param"))
    if canary:
        spec.canary.model.CopyFrom(_canary_ref(model, canary))
        spec.canary.percent = canary_percent
        spec.canary.sticky_key = sticky_key
    name = name or model.name
    with gateway(endpoint, DEFAULT_TIMEOUT_S) as client:
        if update:
            paths = ["model", "instance_count", "instance_kind", "batching", "cache_ttl", "rate_limit", "canary"]
            paths += ["task"] if task else []
            paths += ["parameters"] if param else []
            request = api.UpdateDeploymentRequest(
                name=name, spec=spec, update_mask=field_mask_pb2.FieldMask(paths=paths)
            )
            dep = client.call(client.stub.UpdateDeployment, request).deployment
        else:
            dep = client.call(
                client.stub.CreateDeployment, api.CreateDeploymentRequest(name=name, spec=spec)
            ).deployment
        if wait:
            dep = watch(client, name, timeout)
    if json_output:
        print_json(to_dict(dep))
    elif wait:
        if dep.status.state == d.DEPLOYMENT_STATE_FAILED:
            raise CliError(f"{name} failed: {dep.status.reason}: {dep.status.message}")
        console.print(f"{name} serves {ref} as {_versions(dep)}: /v2/models/{name}/infer", markup=False)
    if dep.status.reason == "UpdateFailed":
        raise CliError(f"the update of {name} failed; the previous versions still serve: {dep.status.message}")


def undeploy(
    name: Annotated[str, typer.Argument(help="Deployment name.", show_default=False)],
    drain_timeout: Annotated[
        float | None, typer.Option("--drain-timeout", help="Longest wait for in-flight requests, seconds.", min=0)
    ] = None,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = 120.0,
) -> None:
    """Stop serving a deployment: new requests are refused, in-flight ones finish, then it unloads."""
    request = api.DeleteDeploymentRequest(name=name)
    if drain_timeout is not None:
        request.drain_timeout.FromMilliseconds(int(drain_timeout * 1000))
    with gateway(endpoint, timeout) as client:
        dep = client.call(client.stub.DeleteDeployment, request).deployment
    if json_output:
        print_json(to_dict(dep))
        return
    console.print(f"{name}: {state_name(dep.status.state)} ({dep.status.message or dep.status.reason})", markup=False)


def list_deployments(client: Client, model: str = "") -> list[d.Deployment]:
    found: list[d.Deployment] = []
    request = api.ListDeploymentsRequest(model_name=model, page_size=1000)
    while True:
        page = client.call(client.stub.ListDeployments, request)
        found.extend(page.deployments)
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


def print_deployments(deployments: list[d.Deployment], json_output: bool) -> None:
    if json_output:
        print_json(to_dict(api.ListDeploymentsResponse(deployments=deployments)))
        return
    now = time.time()
    print_table(
        "deployments",
        ["name", "model", "serving", "state", "cache ttl", "updated", "message"],
        [
            (
                dep.meta.id,
                dep.spec.model.name + (f"@{dep.spec.model.alias}" if dep.spec.model.alias else ""),
                _versions(dep),
                state_name(dep.status.state),
                f"{dep.spec.cache_ttl.ToTimedelta().total_seconds():g}s" if dep.spec.cache_ttl.ToTimedelta() else "off",
                age(dep.meta.update_time, now),
                dep.status.message,
            )
            for dep in deployments
        ],
    )


def register(models_app: typer.Typer) -> None:
    models_app.command("deploy")(deploy)
    models_app.command("undeploy")(undeploy)
