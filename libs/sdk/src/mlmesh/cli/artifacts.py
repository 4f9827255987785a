"""`mlmesh artifacts put|get|ls|rm`: files in and out of storage, with progress on large transfers."""

from __future__ import annotations

import fnmatch
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mlmesh.api.storage.v1 import artifact_pb2
from mlmesh.api.storage.v1 import storage_service_pb2 as api
from mlmesh.cli.common import EndpointOpt, JsonOpt, TimeoutOpt, age, enum_short, print_message, storage
from mlmesh.cli.output import CliError, console, err_console, print_table
from mlmesh.common.quantities import fmt_bytes
from mlmesh.sdk import transfer
from mlmesh.sdk.client import DEFAULT_TIMEOUT_S

artifacts_app = typer.Typer(
    help="Artifacts: checkpoints, models and datasets in storage.", no_args_is_help=True, rich_markup_mode=None
)

# A progress bar is drawn when stderr is a terminal, or (as one final line in a log) for transfers
# larger than this.
PROGRESS_MIN_BYTES = 8 << 20

IdArg = Annotated[str, typer.Argument(help="Artifact id.", show_default=False)]
LabelOpt = Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable).")]


# --- names ---------------------------------------------------------------------------------------


def _choice(enum_type, prefix: str, text: str, flag: str) -> int:
    name = prefix + text.strip().upper().replace("-", "_")
    if name in enum_type.DESCRIPTOR.values_by_name and not name.endswith("_UNSPECIFIED"):
        return enum_type.Value(name)
    choices = "|".join(_short(enum_type, v, prefix) for v in enum_type.values() if v)
    raise CliError(f"{flag}: unknown value {text!r}", hint=f"one of {choices}", exit_code=2)


def _short(enum_type, value: int, prefix: str) -> str:
    return enum_short(enum_type, value, prefix).lower().replace("_", "-")


def parse_kind(text: str) -> int:
    return _choice(artifact_pb2.ArtifactKind, "ARTIFACT_KIND_", text, "--kind")


def parse_tier(text: str) -> int:
    return _choice(artifact_pb2.StorageTier, "STORAGE_TIER_", text, "--tier")


def kind_name(kind: int) -> str:
    return _short(artifact_pb2.ArtifactKind, kind, "ARTIFACT_KIND_")


def tier_name(tier: int) -> str:
    return _short(artifact_pb2.StorageTier, tier, "STORAGE_TIER_")


def parse_pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{flag}: expected key=value, got {item!r}", exit_code=2)
        pairs[key] = value
    return pairs


# --- progress ------------------------------------------------------------------------------------


class TransferBar:
    """Callbacks for `mlmesh.sdk.transfer` that draw a rich progress bar (bytes, bytes/s, ETA) on
    stderr. Started on the first report, if stderr is a terminal or the transfer is large; safe to
    call from gRPC's threads."""

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._tasks: dict[str, int] = {}
        self._show: bool | None = None

    def callback(self, label: str):
        def report(done: int, total: int) -> None:
            with self._lock:
                if self._show is None:
                    self._show = self.enabled and (err_console.is_terminal or total > PROGRESS_MIN_BYTES)
                if not self._show:
                    return
                if self._progress is None:
                    self._progress = Progress(
                        TextColumn("{task.description}"),
                        BarColumn(),
                        DownloadColumn(binary_units=True),
                        TransferSpeedColumn(),
                        TimeRemainingColumn(),
                        console=err_console,
                    )
                    self._progress.start()
                task = self._tasks.get(label)
                if task is None:
                    task = self._tasks[label] = self._progress.add_task(label, total=total)
                self._progress.update(task, completed=done, total=total)

        return report

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None

    def __enter__(self) -> TransferBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- commands ------------------------------------------------------------------------------------


def _dataset_format(path: Path, text: str | None) -> int:
    if text:
        return _choice(artifact_pb2.DatasetFormat, "DATASET_FORMAT_", text, "--format")
    names = [rel for rel, _ in transfer.collect_files(path)]
    for suffix, fmt in (
        (".jsonl", artifact_pb2.DATASET_FORMAT_JSONL),
        (".parquet", artifact_pb2.DATASET_FORMAT_PARQUET),
    ):
        if names and all(n.endswith(suffix) for n in names):
            return fmt
    raise CliError(
        "--format: cannot tell the dataset format from the file names", hint="pass --format jsonl|parquet", exit_code=2
    )


@artifacts_app.command("put")
def put(
    path: Annotated[Path, typer.Argument(help="A file or a directory to upload.", show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Artifact name, e.g. minilm-lora-step-100.", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help="generic|dataset|checkpoint|model.")] = "generic",
    label: LabelOpt = None,
    tier: Annotated[str | None, typer.Option("--tier", help="hot|warm|cold [default: policy].")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Owning team [default: yours].")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Checkpoints: the job that wrote it.")] = None,
    step: Annotated[int, typer.Option("--step", help="Checkpoints: the optimizer step.", min=0)] = 0,
    data_format: Annotated[
        str | None, typer.Option("--format", help="Datasets: jsonl|parquet [default: from the file names].")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key: re-running with it resumes the same upload.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Never draw a progress bar.")] = False,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Upload a file or a directory as one artifact; prints its id. Files the store already holds
    are not sent again; a broken connection resumes where it stopped."""
    draft = api.ArtifactDraft(
        team=team or "", name=name, kind=parse_kind(kind), labels=parse_pairs(label or [], "--label")
    )
    if tier:
        draft.tier = parse_tier(tier)
    if draft.kind == artifact_pb2.ARTIFACT_KIND_CHECKPOINT:
        draft.checkpoint.job_id = job or ""
        draft.checkpoint.step = step
    elif job or step:
        raise CliError("--job and --step are for --kind checkpoint", exit_code=2)
    if draft.kind == artifact_pb2.ARTIFACT_KIND_DATASET:
        draft.dataset.format = _dataset_format(path, data_format)
    with storage(endpoint, timeout) as client, TransferBar(enabled=not no_progress) as bar:
        artifact = transfer.upload(
            client,
            path,
            draft,
            request_id=request_id,
            on_hash_progress=bar.callback("hashing"),
            on_progress=bar.callback("uploading"),
        )
    if json_output:
        print_message(artifact)
        return
    sys.stdout.write(artifact.meta.id + "\n")


@artifacts_app.command("get")
def get(
    artifact_id: IdArg,
    dest: Annotated[Path, typer.Argument(help="Directory to write the files into.", show_default=False)],
    include: Annotated[
        list[str] | None, typer.Option("--include", "-i", help="Only paths matching this glob (repeatable).")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="Never draw a progress bar.")] = False,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Download an artifact's files into DEST, each verified (size and SHA-256) before it appears
    under its name. Re-running continues an interrupted download."""
    patterns = list(include or [])

    def wanted(p: str) -> bool:
        return not patterns or any(fnmatch.fnmatchcase(p, g) for g in patterns)

    with storage(endpoint, timeout) as client, TransferBar(enabled=not no_progress) as bar:
        artifact = transfer.download(
            client, artifact_id, dest, path_filter=wanted, on_progress=bar.callback("downloading")
        )
    if json_output:
        print_message(artifact)
        return
    files = [f for f in artifact.manifest.files if wanted(f.path)]
    if patterns and not files:
        raise CliError(f"no file of {artifact_id} matches --include", hint="`mlmesh artifacts ls --json` lists paths")
    size = sum(f.size_bytes for f in files)
    console.print(f"{len(files)} files ({fmt_bytes(size)}B) of {artifact.meta.id} in {dest}", markup=False)


@artifacts_app.command("ls")
def list_artifacts(
    kind: Annotated[str | None, typer.Option("--kind", help="generic|dataset|checkpoint|model.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Exact name.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Checkpoints of this job.")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="hot|warm|cold.")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value (repeatable, ANDed).")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Another team's artifacts (admins).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many, newest first.", min=1)] = 100,
    json_output: JsonOpt = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """List artifacts, newest first."""
    request = api.ListArtifactsRequest(
        team=team or "",
        kind=parse_kind(kind) if kind else 0,
        name=name or "",
        job_id=job or "",
        tier=parse_tier(tier) if tier else 0,
    )
    request.label_selector.match_labels.update(parse_pairs(label or [], "--label"))
    found: list[artifact_pb2.Artifact] = []
    token = ""
    with storage(endpoint, timeout) as client:
        while len(found) < limit:
            request.page_size = min(1000, limit - len(found))
            request.page_token = token
            page = client.call(client.stub.ListArtifacts, request)
            found.extend(page.artifacts)
            token = page.next_page_token
            if not token:
                break
    if json_output:
        print_message(api.ListArtifactsResponse(artifacts=found[:limit], next_page_token=token))
        return
    now = time.time()
    print_table(
        "artifacts",
        ["id", "name", "kind", "tier", "size", "files", "age"],
        [
            (
                a.meta.id,
                a.name,
                kind_name(a.kind),
                tier_name(a.tier),
                fmt_bytes(a.manifest.total_size_bytes) + "B",
                len(a.manifest.files),
                age(a.meta.create_time, now),
            )
            for a in found[:limit]
        ],
    )


@artifacts_app.command("rm")
def remove(
    artifact_id: IdArg,
    force: Annotated[bool, typer.Option("--force", help="Delete even a pinned artifact (admins).")] = False,
    endpoint: EndpointOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT_S,
) -> None:
    """Delete an artifact. Its blobs are freed once nothing else references them."""
    with storage(endpoint, timeout) as client:
        client.call(client.stub.DeleteArtifact, api.DeleteArtifactRequest(artifact_id=artifact_id, force=force))
    console.print(f"deleted {artifact_id}", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(artifacts_app, name="artifacts")
