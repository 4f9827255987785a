"""Label selectors (mlmesh.common.v1.LabelSelector) evaluated over a plain label mapping."""

from __future__ import annotations

from collections.abc import Mapping

from mlmesh.api.common.v1 import common_pb2

_OP = common_pb2.LabelOperator


def label_match(labels: Mapping[str, str], selector: common_pb2.LabelSelector) -> bool:
    """All conditions ANDed; an empty selector matches everything."""
    for k, v in selector.match_labels.items():
        if labels.get(k) != v:
            return False
    for e in selector.match_expressions:
        has, value = e.key in labels, labels.get(e.key)
        if (
            (e.operator == _OP.LABEL_OPERATOR_IN and value not in e.values)
            or (e.operator == _OP.LABEL_OPERATOR_NOT_IN and has and value in e.values)
            or (e.operator == _OP.LABEL_OPERATOR_EXISTS and not has)
            or (e.operator == _OP.LABEL_OPERATOR_DOES_NOT_EXIST and has)
        ):
            return False
    return True
