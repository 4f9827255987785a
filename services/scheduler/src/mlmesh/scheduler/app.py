"""Wiring of the scheduler: KV store and indexes, inventory, trainer client, controller, API."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
from collections.abc import Iterable

from nats.js.api import DeliverPolicy
from prometheus_client import REGISTRY

from mlmesh.api.events.v1 import events_pb2
from mlmesh.api.fabric.v1 import node_pb2
from mlmesh.api.scheduler.v1 import (
    scheduler_service_pb2,
    scheduler_service_pb2_grpc,
    team_access_service_pb2,
    team_access_service_pb2_grpc,
)
from mlmesh.common import contracts
from mlmesh.common.errors import AlreadyExists
from mlmesh.common.events import Consumer
from mlmesh.common.grpc_server import Runtime
from mlmesh.common.kv import KvRepository
from mlmesh.common.kv_index import KvIndex
from mlmesh.common.lease import Lease
from mlmesh.scheduler.adapters.control_client import ControlClient
from mlmesh.scheduler.adapters.inventory import NODES_BUCKET, FileInventory, KvInventory
from mlmesh.scheduler.adapters.store import SchedulerStore
from mlmesh.scheduler.adapters.trainer_client import TrainerClient
from mlmesh.scheduler.controller import Controller
from mlmesh.scheduler.job_factory import DEFAULT_PRIORITY_CLASSES
from mlmesh.scheduler.metrics import SchedulerCollector
from mlmesh.scheduler.servicer import SchedulerServicer
from mlmesh.scheduler.settings import SchedulerSettings
from mlmesh.scheduler.team_access import EventCredentialIssuer, TeamAccessServicer

SERVICE_NAME = scheduler_service_pb2.DESCRIPTOR.services_by_name["SchedulerService"].full_name
TEAM_ACCESS_SERVICE = team_access_service_pb2.DESCRIPTOR.services_by_name["TeamAccessService"].full_name


async def ensure_default_priority_classes(store: SchedulerStore) -> None:
    """training > inference > preprocessing on a fresh cluster; admins change them afterwards."""
    if await store.priority_classes.keys():
        return
    for pc in DEFAULT_PRIORITY_CLASSES:
        with contextlib.suppress(AlreadyExists):  # another replica got there first
            await store.priority_classes.create(pc.name, pc)


async def register(runtime: Runtime) -> Iterable[str]:
    settings: SchedulerSettings = runtime.settings  # type: ignore[assignment]
    store = await SchedulerStore.open(runtime.js)
    await ensure_default_priority_classes(store)
    jobs = KvIndex(store.jobs)
    queues = KvIndex(store.queues)
    classes = KvIndex(store.priority_classes)
    for index in (jobs, queues, classes):
        await index.start()
        runtime.on_shutdown.append(index.stop)
    if settings.metrics_port >= 0:
        collector = SchedulerCollector(jobs)
        REGISTRY.register(collector)

        async def unregister() -> None:
            REGISTRY.unregister(collector)

        runtime.on_shutdown.append(unregister)
    if settings.inventory_file:
        inventory = FileInventory(settings.inventory_file)
    else:
        nodes = KvIndex(await KvRepository.open(runtime.js, NODES_BUCKET, node_pb2.Node, "node"))
        await nodes.start()
        runtime.on_shutdown.append(nodes.stop)
        inventory = KvInventory(nodes)
    trainer = None
    if settings.trainer_address:
        token = settings.service_token_file.read_text().strip() if settings.service_token_file else ""
        trainer = TrainerClient(settings.trainer_address, token)
        runtime.on_shutdown.append(trainer.close)
    control = None
    if settings.storage_address or settings.inference_gateway_address:
        token = settings.service_token_file.read_text().strip() if settings.service_token_file else ""
        control = ControlClient(settings.storage_address, settings.inference_gateway_address, token)
    lease = Lease(
        store.lease, holder=settings.replica_id or f"{socket.gethostname()}-{os.getpid()}", ttl_s=settings.lease_ttl_s
    )
    controller = Controller(
        store=store,
        jobs=jobs,
        queues=queues,
        priority_classes=classes,
        inventory=inventory,
        lease=lease,
        publisher=runtime.publisher,
        trainer=trainer,
        control=control,
        interval_s=settings.cycle_interval_s,
        max_admissions=settings.max_admissions_per_cycle,
    )

    # Only the lease holder consumes these: the controller starts them on gaining the lease and
    # stops them on losing it. Redelivery is unbounded: every event must reach a leader.
    leader_consumers = (
        (
            contracts.JOBS_STREAM.name,
            "scheduler-run-events",
            contracts.job_subject(contracts.ANY, contracts.ANY, contracts.JOB_RUN),
            events_pb2.RunStateChanged,
            controller.on_run_event,
            DeliverPolicy.ALL,
        ),
        # A new durable starts at now: a day of old node history must not fail today's jobs.
        (
            contracts.FABRIC_STREAM.name,
            "scheduler-node-events",
            contracts.node_subject(contracts.ANY, contracts.NODE_STATE),
            events_pb2.NodeStateChanged,
            controller.on_node_event,
            DeliverPolicy.NEW,
        ),
    )
    controller.consumer_factories = [
        functools.partial(
            Consumer,
            runtime.js,
            stream=stream,
            durable=durable,
            filter_subject=subject,
            message_type=message_type,
            handler=handler,
            max_deliver=-1,
            deliver_policy=policy,
        )
        for stream, durable, subject, message_type, handler, policy in leader_consumers
    ]
    await controller.start()
    runtime.on_shutdown.append(controller.stop)  # hooks run in reverse: the lease is released first
    servicer = SchedulerServicer(controller, trainer)
    scheduler_service_pb2_grpc.add_SchedulerServiceServicer_to_server(servicer, runtime.server)
    issuer = None
    if settings.nats_account_signing_key_file is not None:
        issuer = EventCredentialIssuer.from_files(settings.nats_account_signing_key_file, settings.nats_account)
    team_access_service_pb2_grpc.add_TeamAccessServiceServicer_to_server(TeamAccessServicer(issuer), runtime.server)
    return [SERVICE_NAME, TEAM_ACCESS_SERVICE]
