"""The deployments' python-backend model (mlmesh.gateway.triton_model) in a real tritonserver: each
task's tensors match what transformers computes in this process for the same weights."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import torch
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from .conftest import stream_generate

pytestmark = pytest.mark.timeout(300)

TEXTS = ["the gateway routes requests", "a short one", "Triton batches these texts together, padded"]


@pytest.fixture(scope="module")
def client(triton_server):
    c = tgrpc.InferenceServerClient(triton_server.grpc_url)
    yield c
    c.close()


def _text_input(texts: list[str], name: str = "TEXT") -> tgrpc.InferInput:
    data = np.array([t.encode() for t in texts], dtype=np.object_).reshape(-1, 1)
    x = tgrpc.InferInput(name, list(data.shape), "BYTES")
    x.set_data_from_numpy(data)
    return x


def test_classification_adapter_matches_the_merged_model(client, classification_model, hf_models) -> None:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = client.infer(classification_model, [_text_input(TEXTS)], client_timeout=60)
    scores = result.as_numpy("SCORES")
    labels = [v.decode() for v in result.as_numpy("LABEL").reshape(-1)]

    base = AutoModelForSequenceClassification.from_pretrained(
        str(hf_models.classifier_base_dir), num_labels=len(hf_models.labels)
    )
    model = PeftModel.from_pretrained(base, str(hf_models.classifier_adapter_dir)).merge_and_unload().eval()
    tokenizer = AutoTokenizer.from_pretrained(str(hf_models.classifier_adapter_dir))
    with torch.inference_mode():
        expected = [torch.softmax(model(**tokenizer(t, return_tensors="pt")).logits[0], -1).numpy() for t in TEXTS]
    assert scores.shape == (len(TEXTS), len(hf_models.labels))
    np.testing.assert_allclose(scores, np.stack(expected), rtol=1e-4, atol=1e-6)
    assert labels == [hf_models.labels[int(np.argmax(e))] for e in expected]
    assert len(set(labels)) > 1 or np.ptp(scores) > 0.05  # the trained head matters, not a uniform guess


def test_concurrent_requests_are_batched_and_answered_each(client, classification_model) -> None:
    single = client.infer(classification_model, [_text_input(TEXTS[:1])], client_timeout=60).as_numpy("SCORES")
    answers: queue.Queue = queue.Queue()
    for _ in range(4):
        client.async_infer(
            classification_model,
            [_text_input(TEXTS[:1])],
            callback=lambda result, error: answers.put((result, error)),
            client_timeout=60,
        )
    for _ in range(4):
        result, error = answers.get(timeout=60)
        assert error is None
        np.testing.assert_allclose(result.as_numpy("SCORES"), single, rtol=1e-4, atol=1e-6)


def test_a_bad_input_fails_its_request_only(client, classification_model) -> None:
    with pytest.raises(InferenceServerException) as empty:
        client.infer(classification_model, [_text_input(["  "])], client_timeout=60)
    assert "TEXT must not be empty" in empty.value.message()
    with pytest.raises(InferenceServerException):
        bad = tgrpc.InferInput("TEXT", [1, 1], "BYTES")
        bad.set_data_from_numpy(np.array([[b"\xff\xfe"]], dtype=np.object_))
        client.infer(classification_model, [bad], client_timeout=60)
    # The model still serves.
    assert client.infer(classification_model, [_text_input(["fine"])], client_timeout=60).as_numpy("LABEL").size == 1


def test_embedding_is_normalized_mean_pooling(client, embedding_model, hf_models) -> None:
    from transformers import AutoModel, AutoTokenizer

    result = client.infer(embedding_model, [_text_input(TEXTS)], client_timeout=60)
    embeddings, tokens = result.as_numpy("EMBEDDING"), result.as_numpy("TOKENS")

    tokenizer = AutoTokenizer.from_pretrained(str(hf_models.embedding_dir))
    model = AutoModel.from_pretrained(str(hf_models.embedding_dir)).eval()
    expected, counts = [], []
    with torch.inference_mode():
        for text in TEXTS:
            enc = tokenizer(text, return_tensors="pt")
            hidden = model(**enc).last_hidden_state[0]
            pooled = hidden.mean(dim=0)  # one unpadded text: the mask is all ones
            expected.append(torch.nn.functional.normalize(pooled, dim=0).numpy())
            counts.append(enc["input_ids"].shape[1])
    assert embeddings.shape == (len(TEXTS), 384)
    cosine = np.sum(embeddings * np.stack(expected), axis=1)
    np.testing.assert_allclose(cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert tokens.reshape(-1).tolist() == counts


def test_generation_streams_the_greedy_text(client, generator_model, hf_models) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt, n = "the quick brown fox", 12
    responses = stream_generate(client, generator_model, prompt, n, 0.0)

    tokenizer = AutoTokenizer.from_pretrained(str(hf_models.generator_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_models.generator_dir)).eval()
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, do_sample=False, max_new_tokens=n, pad_token_id=0)
    completion = out[0, ids["input_ids"].shape[1] :]
    expected = tokenizer.decode(completion, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    assert len(completion) == n
    assert len(responses) >= 3
    assert "".join(r[0] for r in responses) == expected
    assert [r[1] for r in responses[:-1]] == [""] * (len(responses) - 1)
    _, finish, prompt_tokens, completion_tokens = responses[-1]
    assert (finish, completion_tokens, prompt_tokens) == ("length", n, ids["input_ids"].shape[1])


def test_generation_samples_and_rejects_bad_inputs(client, generator_model) -> None:
    responses = stream_generate(client, generator_model, "sampling is random", 5, 1.5)
    assert (responses[-1][1], responses[-1][3]) == ("length", 5)
    with pytest.raises(InferenceServerException) as bad:
        stream_generate(client, generator_model, "too few", 0, None)
    assert "MAX_TOKENS must be at least 1" in bad.value.message()
    with pytest.raises(InferenceServerException) as empty:
        stream_generate(client, generator_model, "", 4, None)
    assert "PROMPT must not be empty" in empty.value.message()
