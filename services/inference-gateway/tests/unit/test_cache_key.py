"""Cache keys: what changes the key and what does not."""

import gzip
import json

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from mlmesh.gateway.domain.cache_key import cache_key, grpc_request_digest, http_request_digest

pytestmark = pytest.mark.timeout(10)


def grpc_request(data=(1.0, 2.0), *, id="", version="", param=None, output="Y") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="team-a--double", model_version=version, id=id)
    x = request.inputs.add(name="X", datatype="FP32", shape=[len(data)])
    request.raw_input_contents.append(np.asarray(data, dtype=np.float32).tobytes())
    request.outputs.add(name=output)
    if param is not None:
        request.parameters["priority"].int64_param = param
        x.parameters["binary_data_size"].int64_param = param
    return request


def key(request, team="team-a", version="1") -> str:
    return cache_key(team, "double", version, grpc_request_digest(request))


def test_grpc_same_inputs_same_key_and_id_ignored() -> None:
    assert key(grpc_request()) == key(grpc_request(id="req-1")) == key(grpc_request(id="req-2"))
    assert key(grpc_request()).startswith("mlmesh:gw:infer:team-a:double:1:")
    # The model version field is not in the digest: the concrete version in the key is.
    assert key(grpc_request(version="1")) == key(grpc_request())


@pytest.mark.parametrize(
    "other",
    [
        lambda: key(grpc_request(), team="team-b"),
        lambda: key(grpc_request(), version="2"),
        lambda: key(grpc_request(param=1)),
        lambda: key(grpc_request(data=(1.0, 3.0))),
        lambda: key(grpc_request(output="Z")),
    ],
    ids=["team", "version", "parameters", "data", "outputs"],
)
def test_grpc_anything_else_changes_the_key(other) -> None:
    assert other() != key(grpc_request())


def test_grpc_parameter_order_does_not_matter() -> None:
    a, b = grpc_request(), grpc_request()
    a.parameters["p"].int64_param = 1
    a.parameters["q"].string_param = "x"
    b.parameters["q"].string_param = "x"
    b.parameters["p"].int64_param = 1
    assert key(a) == key(b)


def http_body(document: dict, tail: bytes = b"") -> tuple[bytes, str | None]:
    head = json.dumps(document).encode()
    return head + tail, (str(len(head)) if tail else None)


DOC = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}], "outputs": [{"name": "Y"}]}


def http_digest(document: dict, tail: bytes = b"", encoding: str = "", accept: str = "") -> str:
    body, length = http_body(document, tail)
    if encoding == "gzip":
        body = gzip.compress(body)
    keyed = http_request_digest(body, length, encoding, accept)
    assert keyed is not None
    return keyed.digest


def test_http_id_and_json_layout_ignored() -> None:
    with_id = {"id": "abc", **DOC}
    assert http_digest(DOC) == http_digest(with_id) == http_digest(dict(reversed(list(DOC.items()))))
    assert http_digest(DOC) == http_digest(DOC, encoding="gzip")
    body, length = http_body(with_id)
    assert http_request_digest(body, length, "").request_id == "abc"


def test_http_other_data_parameters_tail_or_accepted_encoding_change_the_key() -> None:
    base = http_digest(DOC)
    other_data = json.loads(json.dumps(DOC))
    other_data["inputs"][0]["data"] = [1.0, 3.0]
    with_params = {**DOC, "parameters": {"priority": 1}}
    assert len({base, http_digest(other_data), http_digest(with_params), http_digest(DOC, accept="gzip")}) == 4
    assert http_digest(DOC, b"\x00\x01") != http_digest(DOC, b"\x00\x02")


def test_http_unkeyable_bodies() -> None:
    assert http_request_digest(b"not json", None, "") is None
    assert http_request_digest(b"[1]", None, "") is None
    assert http_request_digest(b"{}", None, "br") is None
    assert http_request_digest(b"{}", "99", "") is None
