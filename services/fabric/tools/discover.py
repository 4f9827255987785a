#!/usr/bin/env python3
"""Run the node agent's discovery here and print what it finds.

Prints (1) the discovered Node as proto3 JSON, (2) one utilization sample (CPU measured over
`--interval` seconds), and with `--probe` (3) the raw NVML answers behind the NVLink / MIG / ECC / XID
fields, errors included, as JSON. Needs only protobuf and (for GPUs) nvidia-ml-py:

    PYTHONPATH=libs/common/src:services/fabric/src python3 services/fabric/tools/discover.py --probe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from mlmesh.fabric.agent.discovery import DiscoveryConfig, discover, read_kernel_xids
from mlmesh.fabric.agent.utilization import Sampler


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def _try(fn: Any, *args: Any) -> Any:
    try:
        value = fn(*args)
    except Exception as e:
        return {"error": _err(e)}
    return value.decode() if isinstance(value, bytes) else value


def _bus(pci: Any) -> Any:
    bus = getattr(pci, "busId", pci)
    return bus.decode() if isinstance(bus, bytes) else bus


def probe() -> dict[str, Any]:
    """Raw NVML answers, so a reader can see why a discovered field is empty."""
    out: dict[str, Any] = {}
    try:
        from importlib import metadata

        out["nvidia_ml_py"] = metadata.version("nvidia-ml-py")
        import pynvml as nv
    except Exception as e:
        return {"error": _err(e)}
    try:
        nv.nvmlInit()
    except Exception as e:
        out["nvmlInit"] = _err(e)
        return out
    try:
        out["driver"] = _try(nv.nvmlSystemGetDriverVersion)
        out["nvml_version"] = _try(nv.nvmlSystemGetNVMLVersion)
        out["cuda_driver_version"] = _try(nv.nvmlSystemGetCudaDriverVersion_v2)
        kmsg = read_kernel_xids(Path("/dev/kmsg"))
        out["kernel_log_xids"] = "unreadable" if kmsg is None else kmsg
        gpus = []
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            g: dict[str, Any] = {"index": i, "name": _try(nv.nvmlDeviceGetName, h)}
            g["uuid"] = _try(nv.nvmlDeviceGetUUID, h)
            g["bus_id"] = _bus(_try(nv.nvmlDeviceGetPciInfo, h))
            g["numa_node_id"] = _try(nv.nvmlDeviceGetNumaNodeId, h)
            g["mig_mode"] = _try(nv.nvmlDeviceGetMigMode, h)
            g["ecc_mode"] = _try(nv.nvmlDeviceGetEccMode, h)
            g["ecc_volatile"] = {
                kind: _try(nv.nvmlDeviceGetTotalEccErrors, h, code, nv.NVML_VOLATILE_ECC)
                for kind, code in (
                    ("corrected", nv.NVML_MEMORY_ERROR_TYPE_CORRECTED),
                    ("uncorrected", nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
                )
            }
            g["remapped_rows"] = _try(nv.nvmlDeviceGetRemappedRows, h)
            links: dict[str, Any] = {}
            errors: dict[str, list[int]] = {}
            for link in range(nv.NVML_NVLINK_MAX_LINKS):
                try:
                    state = nv.nvmlDeviceGetNvLinkState(h, link)
                except Exception as e:
                    errors.setdefault(_err(e), []).append(link)
                    continue
                entry: dict[str, Any] = {"active": bool(state)}
                if state:
                    entry["remote_type"] = _try(nv.nvmlDeviceGetNvLinkRemoteDeviceType, h, link)
                    entry["remote_bus_id"] = _bus(_try(nv.nvmlDeviceGetNvLinkRemotePciInfo, h, link))
                    entry["version"] = _try(nv.nvmlDeviceGetNvLinkVersion, h, link)
                links[str(link)] = entry
            g["nvlink"] = {"links": links, "errors": errors}
            fv = _try(nv.nvmlDeviceGetFieldValues, h, [nv.NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON])
            g["nvlink_speed_mbps_common"] = (
                fv if isinstance(fv, dict) else {"nvmlReturn": fv[0].nvmlReturn, "uiVal": fv[0].value.uiVal}
            )
            try:
                es = nv.nvmlEventSetCreate()
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, es)
                g["xid_event_registration"] = "ok"
                g["xid_event_wait_0ms"] = _try(nv.nvmlEventSetWait_v2, es, 0)
                if not isinstance(g["xid_event_wait_0ms"], dict):
                    g["xid_event_wait_0ms"] = str(g["xid_event_wait_0ms"])
                nv.nvmlEventSetFree(es)
            except Exception as e:
                g["xid_event_registration"] = _err(e)
            gpus.append(g)
        out["gpus"] = gpus
    finally:
        nv.nvmlShutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between the two CPU samples")
    parser.add_argument("--probe", action="store_true", help="also print the raw NVML answers")
    parser.add_argument("--reserve-cpu-millis", type=int, default=0)
    parser.add_argument("--reserve-memory-bytes", type=int, default=0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    node = discover(
        DiscoveryConfig(
            agent_address="127.0.0.1:7070",
            reserve_cpu_millis=args.reserve_cpu_millis,
            reserve_memory_bytes=args.reserve_memory_bytes,
        )
    )
    took = time.perf_counter() - t0
    print("=== node ===")
    print(json_format.MessageToJson(node, indent=2))
    print(f"=== discovery took {took:.3f} s ===")
    with Sampler() as sampler:
        sampler.sample()
        time.sleep(args.interval)
        sample = sampler.sample()
    print("=== utilization ===")
    print(json_format.MessageToJson(sample, indent=2))
    if args.probe:
        print("=== nvml probe ===")
        print(json.dumps(probe(), indent=2, default=str))


if __name__ == "__main__":
    main()
