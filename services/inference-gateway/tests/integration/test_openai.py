"""The OpenAI-compatible API with the real `openai` client, through the gateway process, in front
of a real Triton serving team-a's generation and embedding models."""

from __future__ import annotations

import re
import urllib.request

import httpx2 as httpx
import numpy as np
import openai
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from .conftest import EMBEDDER, GENERATOR, Gateway, stream_generate

pytestmark = pytest.mark.timeout(180)


def _client(gateway: Gateway, token: str | None) -> openai.OpenAI:
    return openai.OpenAI(
        api_key=token or "no-token", base_url=f"http://{gateway.http_address}/v1", max_retries=0, timeout=60
    )


@pytest.fixture
def alice(llm_gateway: Gateway):
    client = _client(llm_gateway, llm_gateway.alice)
    yield client
    client.close()


@pytest.fixture(scope="module")
def triton_grpc(triton_server):
    client = tgrpc.InferenceServerClient(triton_server.grpc_url)
    yield client
    client.close()


def _first_token_count(gateway: Gateway, front: str) -> float:
    text = urllib.request.urlopen(gateway.metrics_url, timeout=10).read().decode()
    match = re.search(rf'^mlmesh_gateway_first_token_seconds_count{{front="{front}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_completion_is_triton_s_generation(alice, triton_grpc, generator_model) -> None:
    answer = alice.completions.create(model=GENERATOR, prompt="once upon a time", max_tokens=8, temperature=0)
    direct = stream_generate(triton_grpc, generator_model, "once upon a time", 8, 0.0)
    choice = answer.choices[0]
    assert answer.object == "text_completion" and answer.model == GENERATOR
    assert choice.text == "".join(r[0] for r in direct) and choice.text
    assert choice.finish_reason == "length"
    assert answer.usage.completion_tokens == 8 and answer.usage.prompt_tokens == direct[-1][2]
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 8


def test_streamed_completion_joins_to_the_same_text(llm_gateway: Gateway, alice) -> None:
    before = _first_token_count(llm_gateway, "openai")
    whole = alice.completions.create(model=GENERATOR, prompt="streams of text", max_tokens=10, temperature=0)
    chunks = list(
        alice.completions.create(
            model=GENERATOR,
            prompt="streams of text",
            max_tokens=10,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert len([t for t in texts if t]) >= 3  # sent as Triton produced them, not at once
    assert "".join(texts) == whole.choices[0].text
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage.completion_tokens == 10
    assert _first_token_count(llm_gateway, "openai") >= before + 2


def test_chat_uses_the_documented_template(alice) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    chat = alice.chat.completions.create(model=GENERATOR, messages=messages, max_tokens=6, temperature=0)
    plain = alice.completions.create(
        model=GENERATOR, prompt="system: be brief\nuser: hello\nassistant:", max_tokens=6, temperature=0
    )
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 6
    streamed = alice.chat.completions.create(
        model=GENERATOR, messages=messages, max_tokens=6, temperature=0, stream=True
    )
    parts = [c.choices[0].delta.content or "" for c in streamed]
    assert "".join(parts) == chat.choices[0].message.content


def test_embeddings_are_the_model_s_and_repeats_come_from_the_cache(
    alice, triton_server, triton_grpc, embedding_model
) -> None:
    texts = ["an embedding test", "and another sentence to embed"]
    answer = alice.embeddings.create(model=EMBEDDER, input=texts)  # the client asks for base64
    floats = alice.embeddings.create(model=EMBEDDER, input=texts[0], encoding_format="float")

    data = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    text = tgrpc.InferInput("TEXT", list(data.shape), "BYTES")
    text.set_data_from_numpy(data)
    direct = triton_grpc.infer(embedding_model, [text])
    expected = direct.as_numpy("EMBEDDING")
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(floats.data[0].embedding, dtype=np.float32), expected[0], rtol=1e-5, atol=1e-6)
    assert [d.index for d in answer.data] == [0, 1] and answer.model == EMBEDDER
    assert answer.usage.prompt_tokens == int(direct.as_numpy("TOKENS").sum()) == answer.usage.total_tokens

    stats = thttp.InferenceServerClient(triton_server.http_url.removeprefix("http://"))
    try:

        def executed() -> int:
            model = stats.get_inference_statistics(embedding_model)["model_stats"][0]
            return int(model["inference_stats"]["success"]["count"])

        before = executed()
        again = alice.embeddings.create(model=EMBEDDER, input=texts)
        assert executed() == before  # answered from the cache
    finally:
        stats.close()
    assert [d.embedding for d in again.data] == [d.embedding for d in answer.data]


def test_errors_take_openai_s_shape(llm_gateway: Gateway, alice) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        alice.completions.create(model=GENERATOR, prompt="x", max_tokens=-1)
    assert bad.value.param == "max_tokens" and bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad_role:
        alice.chat.completions.create(model=GENERATOR, messages=[{"role": "wizard", "content": "hi"}])
    assert bad_role.value.param == "messages.0.role"
    with pytest.raises(openai.NotFoundError) as unknown:
        alice.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert unknown.value.param == "model" and "team-" not in str(unknown.value)
    with pytest.raises(openai.NotFoundError):
        alice.embeddings.create(model="no-such-model", input="x")

    bob = _client(llm_gateway, llm_gateway.bob)
    anonymous = _client(llm_gateway, None)
    try:
        with pytest.raises(openai.NotFoundError):
            bob.completions.create(model=GENERATOR, prompt="x", max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            bob.embeddings.create(model=EMBEDDER, input="x")
        with pytest.raises(openai.AuthenticationError) as denied:
            anonymous.models.list()
        assert denied.value.type == "authentication_error"
    finally:
        bob.close()
        anonymous.close()

    # Over the size limit: 413 before the body is parsed.
    big = httpx.post(
        f"http://{llm_gateway.http_address}/v1/embeddings",
        headers=llm_gateway.headers(llm_gateway.alice),
        json={"model": EMBEDDER, "input": "x" * (2 * 1024 * 1024)},
        timeout=30,
    )
    assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"


def test_models_lists_only_deployments(alice) -> None:
    assert alice.models.list().data == []  # team-a's models here are loaded by hand, not deployed
