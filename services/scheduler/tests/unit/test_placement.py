"""Gang placement: all-or-none, topology preference, filters, burst pools, spot, CPU-only, NoFit reasons."""

from __future__ import annotations

import pytest

from mlmesh.scheduler.domain.model import GangRequest, LabelRequirement, Level, Node, NoFit, Placement, Res
from mlmesh.scheduler.domain.placement import Inventory, place_gang, plan_reservation

pytestmark = pytest.mark.timeout(60)

GiB = 2**30
FULL = Res(8, 64_000, 512 * GiB)


def node(i: int, *, dom: str = "", sw: str = "", zone: str = "z0", free: Res = FULL, **kw) -> Node:
    return Node(f"n{i:02d}", FULL, free, gpu_model=kw.pop("gpu_model", "NVIDIA H100 80GB HBM3"),
                gpu_memory_bytes=kw.pop("gpu_memory_bytes", 80 * GiB), zone=zone, switch=sw,
                nvlink_domain=dom, **kw)  # fmt: skip


def gpus(n: int, workers: int = 1, **kw) -> GangRequest:
    return GangRequest(workers, Res(n, 1_000, GiB), **kw)


def used(gpus_used: int) -> Res:
    return FULL - Res(gpus_used, 0, 0)


def nodes_of(p: Placement | NoFit) -> list[str]:
    assert isinstance(p, Placement), p
    return [nid for nid, _ in p.assignments]


def test_gang_is_all_or_none_and_never_mutates():
    inv = Inventory([node(0), node(1)])
    assert isinstance(place_gang(inv, gpus(8, workers=2)), Placement)
    result = place_gang(inv, gpus(8, workers=3))
    assert isinstance(result, NoFit)
    assert "needs 3 workers x 8 GPUs" in result.message
    assert inv.total_free().gpus == 16  # place_gang only reads


def test_placement_covers_every_worker_and_fits_each_node():
    inv = Inventory([node(0, free=used(6)), node(1, free=used(3)), node(2)])
    p = place_gang(inv, gpus(2, workers=5))
    assert sum(w for _, w in p.assignments) == 5
    for nid, w in p.assignments:
        assert Res(2, 1_000, GiB).times(w).fits_in(inv.nodes[nid].free)


def test_single_node_best_fit_prefers_the_partly_used_node():
    inv = Inventory([node(0), node(1, free=used(4)), node(2, free=used(6))])
    assert nodes_of(place_gang(inv, gpus(4))) == ["n01"]  # 4 free: exact fit, keeps n00 whole
    assert nodes_of(place_gang(inv, gpus(2))) == ["n02"]


def test_topology_prefers_nvlink_domain_over_switch_over_zone():
    # Two free nodes in each place; the tightest pair wins.
    nodes = [
        node(0, dom="d0", sw="s0", zone="z0"),
        node(1, dom="d1", sw="s1", zone="z0"),  # n00+n01: same zone only
        node(2, dom="d2", sw="s2", zone="z1"),
        node(3, dom="d3", sw="s2", zone="z1"),  # n02+n03: same switch
        node(4, dom="d4", sw="s3", zone="z2"),
        node(5, dom="d4", sw="s3", zone="z2"),  # n04+n05: same NVLink domain
    ]
    p = place_gang(Inventory(nodes), gpus(8, workers=2))
    assert sorted(nodes_of(p)) == ["n04", "n05"] and p.level == Level.SAME_NVLINK_DOMAIN
    p = place_gang(Inventory(nodes[:4]), gpus(8, workers=2))
    assert sorted(nodes_of(p)) == ["n02", "n03"] and p.level == Level.SAME_SWITCH
    p = place_gang(Inventory([*nodes[:2], node(6, dom="d6", sw="s6", zone="z3")]), gpus(8, workers=2))
    assert sorted(nodes_of(p)) == ["n00", "n01"] and p.level == Level.SAME_ZONE


def test_fewer_nodes_and_tighter_levels_score_higher():
    inv = Inventory([node(i, dom="d0", sw="s0") for i in range(4)] + [node(9, dom="d9", sw="s9", zone="z9")])
    one = place_gang(inv, gpus(8))
    two = place_gang(inv, gpus(8, workers=2))
    cross = place_gang(inv, gpus(8, workers=5))
    assert one.level == Level.SAME_NODE and cross.level == Level.CROSS_ZONE
    assert one.score > two.score > cross.score


def test_required_level_is_a_hard_constraint():
    nodes = [node(0, dom="d0", sw="s0"), node(1, dom="d1", sw="s0"), node(2, dom="d2", sw="s1")]
    inv = Inventory(nodes)
    p = place_gang(inv, gpus(8, workers=2, required_level=Level.SAME_SWITCH))
    assert sorted(nodes_of(p)) == ["n00", "n01"]
    nofit = place_gang(inv, gpus(8, workers=2, required_level=Level.SAME_NVLINK_DOMAIN))
    assert isinstance(nofit, NoFit)
    assert dict(nofit.rejections)["Topology"] == 3
    assert "within one NVLink domain" in nofit.message


def test_big_gang_lands_on_empty_domain_while_small_ones_fill_fragments():
    frag = [node(i, dom="d0", sw="s0", free=used(4)) for i in range(4)]
    empty = [node(10 + i, dom="d1", sw="s0") for i in range(4)]
    inv = Inventory(frag + empty)
    assert set(nodes_of(place_gang(inv, gpus(2, workers=2)))) <= {"n00", "n01", "n02", "n03"}  # one node
    p = place_gang(inv, gpus(2, workers=6))  # needs several nodes: the fragmented domain is the best fit
    assert set(nodes_of(p)) <= {"n00", "n01", "n02", "n03"} and p.level == Level.SAME_NVLINK_DOMAIN
    assert set(nodes_of(place_gang(inv, gpus(8, workers=4)))) == {"n10", "n11", "n12", "n13"}


def test_gpu_model_filter_is_case_insensitive_substring():
    inv = Inventory([node(0, gpu_model="NVIDIA A100-SXM4-80GB"), node(1, gpu_model="NVIDIA H100 80GB HBM3")])
    assert nodes_of(place_gang(inv, gpus(8, gpu_models=("h100",)))) == ["n01"]
    assert nodes_of(place_gang(inv, gpus(8, gpu_models=("B200", "a100")))) == ["n00"]
    nofit = place_gang(inv, gpus(8, gpu_models=("B200",)))
    assert dict(nofit.rejections) == {"GpuModelMismatch": 2}


def test_min_gpu_memory_filter():
    inv = Inventory([node(0, gpu_memory_bytes=40 * GiB), node(1, gpu_memory_bytes=80 * GiB)])
    assert nodes_of(place_gang(inv, gpus(8, min_gpu_memory_bytes=64 * GiB))) == ["n01"]
    nofit = place_gang(inv, gpus(8, workers=2, min_gpu_memory_bytes=64 * GiB))
    assert dict(nofit.rejections) == {"GpuMemoryTooSmall": 1}


def test_label_selectors_and_expressions():
    inv = Inventory(
        [
            node(0, labels={"rack": "a", "ib": "hdr"}),
            node(1, labels={"rack": "b", "ib": "ndr"}),
            node(2, labels={"rack": "c"}),
        ]
    )

    def picks(**kw) -> set[str]:
        out = set()
        probe = inv.snapshot()
        while isinstance(p := place_gang(probe, gpus(8, **kw)), Placement):
            out.update(nodes_of(p))
            probe.reserve(p, Res(8, 1_000, GiB))
        return out

    assert picks(match_labels=(("rack", "b"),)) == {"n01"}
    assert picks(match_expressions=(LabelRequirement("ib", "In", ("hdr", "ndr")),)) == {"n00", "n01"}
    assert picks(match_expressions=(LabelRequirement("ib", "NotIn", ("hdr",)),)) == {"n01", "n02"}
    assert picks(match_expressions=(LabelRequirement("ib", "Exists"),)) == {"n00", "n01"}
    assert picks(match_expressions=(LabelRequirement("ib", "DoesNotExist"),)) == {"n02"}
    nofit = place_gang(inv, gpus(8, match_labels=(("rack", "z"),)))
    assert dict(nofit.rejections) == {"Selector": 3}


def test_burst_prefers_onprem_then_overflows_to_cloud():
    inv = Inventory([node(0, pool="cloud"), node(1, pool="onprem"), node(2, pool="onprem")])
    assert nodes_of(place_gang(inv, gpus(8))) in (["n01"], ["n02"])
    assert sorted(nodes_of(place_gang(inv, gpus(8, workers=2)))) == ["n01", "n02"]
    assert sorted(nodes_of(place_gang(inv, gpus(8, workers=3)))) == ["n00", "n01", "n02"]
    onprem_only = place_gang(inv, gpus(8, workers=3, pool_preference=("onprem",)))
    assert dict(onprem_only.rejections) == {"Pool": 1}


def test_cloud_first_preference_is_honoured():
    inv = Inventory([node(0, pool="cloud"), node(1, pool="onprem")])
    assert nodes_of(place_gang(inv, gpus(8, pool_preference=("cloud", "onprem")))) == ["n00"]


def test_spot_nodes_only_when_allowed():
    inv = Inventory([node(0, pool="cloud", spot=True), node(1, pool="cloud")])
    assert sorted(nodes_of(place_gang(inv, gpus(8, workers=2, allow_spot=True)))) == ["n00", "n01"]
    assert nodes_of(place_gang(inv, gpus(8))) == ["n01"]
    nofit = place_gang(inv, gpus(8, workers=2))
    assert dict(nofit.rejections) == {"Spot": 1}


def test_unschedulable_nodes_are_skipped():
    inv = Inventory([node(0, schedulable=False), node(1)])
    assert nodes_of(place_gang(inv, gpus(8))) == ["n01"]
    assert dict(place_gang(inv, gpus(8, workers=2)).rejections) == {"NotSchedulable": 1}
    assert inv.total_allocatable().gpus == 8


def test_cpu_only_jobs_place_on_any_node_with_cpu_and_memory():
    cpu_node = Node("cpu0", Res(0, 32_000, 128 * GiB), Res(0, 32_000, 128 * GiB))
    inv = Inventory([node(0), cpu_node])
    p = place_gang(inv, GangRequest(2, Res(0, 8_000, 16 * GiB)))
    assert nodes_of(p) == ["cpu0"]  # fewest free GPUs first: keeps the GPU node's CPU for GPU jobs
    p = place_gang(inv, GangRequest(10, Res(0, 8_000, 16 * GiB)))
    assert sum(w for _, w in p.assignments) == 10
    nofit = place_gang(inv, GangRequest(1, Res(0, 100_000, GiB)))
    assert dict(nofit.rejections) == {"InsufficientCpu": 2}


def test_nofit_counts_nodes_per_reason_and_says_it_in_one_sentence():
    nodes = [
        node(0, free=used(8)),
        node(1, free=used(8)),
        node(2, free=used(0)),
        node(3, free=Res(8, 500, 512 * GiB)),  # GPUs free but CPU gone
        node(4, pool="cloud", free=used(0), spot=True),
        node(5, gpu_model="A100", free=used(0)),
        node(6, schedulable=False),
    ]
    inv = Inventory(nodes)
    nofit = place_gang(inv, gpus(8, workers=4, gpu_models=("H100",)))
    assert isinstance(nofit, NoFit)
    assert dict(nofit.rejections) == {
        "NotSchedulable": 1,
        "GpuModelMismatch": 1,
        "Spot": 1,
        "InsufficientGpus": 2,
        "InsufficientCpu": 1,
    }
    assert nofit.message.startswith("needs 4 workers x 8 GPUs")
    assert "1 node can host 1 worker each (1 in all)" in nofit.message
    assert "\n" not in nofit.message


def test_reserve_release_keep_free_and_indexes_right():
    inv = Inventory([node(i, dom=f"d{i // 2}", sw="s0") for i in range(4)])
    p = place_gang(inv, gpus(4, workers=3))
    inv.reserve(p, Res(4, 1_000, GiB))
    assert inv.total_free().gpus == 20
    assert inv.verify() == []
    with pytest.raises(ValueError):
        inv.reserve((("n00", 3),), Res(4, 0, 0))  # would overbook
    assert inv.verify() == []
    inv.release(p, Res(4, 1_000, GiB))
    assert inv.total_free() == FULL.times(4)
    assert inv.verify() == []
    with pytest.raises(ValueError):
        inv.release((("n00", 1),), Res(1, 0, 0))  # above allocatable


def test_excluded_nodes_are_invisible_until_included():
    inv = Inventory([node(0), node(1)])
    inv.exclude(["n00"])
    assert nodes_of(place_gang(inv, gpus(8))) == ["n01"]
    nofit = place_gang(inv, gpus(8, workers=2))
    assert dict(nofit.rejections) == {"Reserved": 1}
    inv.include(["n00"])
    assert isinstance(place_gang(inv, gpus(8, workers=2)), Placement)
    assert inv.verify() == []


def test_reservation_picks_the_group_closest_to_draining():
    busy = [node(i, dom="d0", sw="s0", free=used(8)) for i in range(2)]
    half = [node(10 + i, dom="d1", sw="s0", free=used(4)) for i in range(2)]
    inv = Inventory(busy + half)
    assert isinstance(place_gang(inv, gpus(8, workers=2)), NoFit)
    assert sorted(plan_reservation(inv, gpus(8, workers=2))) == ["n10", "n11"]
    assert plan_reservation(inv, gpus(8, workers=5)) is None  # could never fit


def test_snapshot_is_independent():
    inv = Inventory([node(0)])
    copy = inv.snapshot()
    copy.reserve((("n00", 1),), Res(8, 0, 0))
    assert inv.total_free().gpus == 8 and copy.total_free().gpus == 0
