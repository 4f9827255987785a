import gzip
import json

import pytest

from mlmesh.gateway.backends import HttpResponse
from mlmesh.gateway.http_front import rename_in_reply

pytestmark = pytest.mark.timeout(10)


def test_binary_reply_gets_the_callers_name_and_a_new_header_length() -> None:
    head = json.dumps({"model_name": "team-a--double", "outputs": [{"name": "Y", "parameters": {}}]}).encode()
    tail = b"\x00\x01\x02\x03"
    reply = HttpResponse(
        200,
        {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head)), "X-Other": "1"},
        head + tail,
    )
    body, headers = rename_in_reply(reply, "team-a--double", "double")
    length = int(headers["inference-header-content-length"])
    assert json.loads(body[:length])["model_name"] == "double"
    assert body[length:] == tail
    assert "x-other" not in headers


def test_gzip_reply_and_error_messages_are_rewritten() -> None:
    reply = HttpResponse(
        400,
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
        gzip.compress(json.dumps({"error": "unexpected shape for 'team-a--double'"}).encode()),
    )
    body, headers = rename_in_reply(reply, "team-a--double", "double")
    assert headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(body)) == {"error": "unexpected shape for 'double'"}


def test_non_json_passes_through() -> None:
    reply = HttpResponse(200, {"Content-Type": "text/plain"}, b"not json")
    assert rename_in_reply(reply, "t--m", "m")[0] == b"not json"
