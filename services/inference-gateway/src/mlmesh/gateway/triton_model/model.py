"""The python-backend model of every mlmesh deployment (Triton copies nothing: the gateway's
deployment controller copies this file into each version directory).

Self-contained on purpose: Triton runs it in its own image, so it imports only numpy, torch,
transformers, peft and Triton's `triton_python_backend_utils`, never mlmesh.

A version directory holds:
- `model/`: the Hugging Face directory the trainer saved (full weights, or a peft adapter with
  `adapter_config.json`), its tokenizer and the trainer's card `mlmesh_model.json`
  (`task`, `base_model`, `method`, `labels`, `format`, `sentence_transformers`);
- `base/`: an adapter's base model (a Hugging Face directory); adapters are merged into it at load.

The task comes from config.pbtxt's parameter `task`; the other parameters are the task's defaults
(`max_new_tokens`, `temperature`, `top_p`, `max_length`, `dtype`, `cpu_threads`). The tensors follow
`mlmesh.gateway.domain.model_repository.CONTRACT`:
- text_classification: TEXT (BYTES [b,1]) -> LABEL (BYTES [b,1]), SCORES (FP32 [b,labels], softmax);
- embedding: TEXT (BYTES [b,1]) -> EMBEDDING (FP32 [b,d], mean pooling over the attention mask,
  L2-normalized), TOKENS (INT32 [b,1], tokens seen per text);
- text_generation (decoupled): PROMPT (BYTES [1]), optional MAX_TOKENS (INT32 [1]) and TEMPERATURE
  (FP32 [1]) -> a stream of responses of TEXT (the new text), FINISH_REASON ("" until the last
  response: "stop" at the end-of-sequence token, "length" at the token limit), PROMPT_TOKENS and
  COMPLETION_TOKENS; the last one carries the final flag. Greedy at temperature 0, sampling
  otherwise. The prompt is tokenized without special tokens, as the trainer tokenizes text.
"""

import contextlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

CARD = "mlmesh_model.json"
CLASSIFICATION = "text_classification"
GENERATION = "text_generation"
EMBEDDING = "embedding"
TASKS = (CLASSIFICATION, GENERATION, EMBEDDING)
BATCH_CHUNK = 64  # texts per forward pass: bounds padding waste and memory of a large batch
DEFAULT_MAX_NEW_TOKENS = 16
DEFAULT_TEMPERATURE = 1.0
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class InputError(ValueError):
    """A request the model cannot serve: answered with an error for that request alone."""


def _error(message, invalid=True):
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if invalid else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _decode_text(value, name):
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name} must be UTF-8 text") from None
    else:
        raise InputError(f"{name} must be a BYTES (string) tensor")
    if not text.strip():
        raise InputError(f"{name} must not be empty")
    return text


def _texts(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        raise InputError(f"input {name} is required")
    array = tensor.as_numpy()
    if array.dtype != np.object_:
        raise InputError(f"{name} must be a BYTES (string) tensor")
    if array.size == 0:
        raise InputError(f"{name} holds no text")
    return [_decode_text(v, name) for v in array.reshape(-1)]


def _scalar(request, name, kind):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    array = tensor.as_numpy()
    if array.size != 1:
        raise InputError(f"{name} must hold one value")
    value = array.reshape(-1)[0]
    if kind is int:
        if not np.issubdtype(array.dtype, np.integer):
            raise InputError(f"{name} must be an integer")
        return int(value)
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name} must be a float")
    return float(value)


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _has_tokenizer(directory):
    return any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.task = params.pop("task", "")
        if self.task not in TASKS:
            raise ValueError(f"parameter 'task' must be one of {', '.join(TASKS)}, not {self.task!r}")
        self.params = params
        version_dir = Path(__file__).resolve().parent
        if not (version_dir / "model").is_dir():  # model.py imported from elsewhere
            version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.model_dir = version_dir / "model"
        self.base_dir = version_dir / "base"
        self.card = _read_json(self.model_dir / CARD)
        self.adapter = (self.model_dir / "adapter_config.json").is_file()

        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        self.device = torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}" if gpu else "cpu")
        if not gpu:
            self._set_threads(config)
        self.dtype = self._dtype(gpu)

        from transformers import AutoTokenizer

        tokenizer_dir = self.model_dir
        if not _has_tokenizer(tokenizer_dir) and self.adapter:
            tokenizer_dir = self.base_dir
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.sep_token
        self.labels = []
        self.model = self._load_model()
        self.model.to(self.device)
        self.model.eval()
        self.max_length = self._max_length()

    # Loading.
    def _set_threads(self, config):
        instances = sum(int(g.get("count") or 1) for g in config.get("instance_group") or [{}]) or 1
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:
            cpus = os.cpu_count() or 1
        threads = int(self.params.get("cpu_threads") or 0) or max(1, cpus // instances)
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # already set, or parallel work already ran
            torch.set_num_interop_threads(1)

    def _dtype(self, gpu):
        name = self.params.get("dtype", "")
        if not name:
            name = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if gpu else "float32"
        if name not in _DTYPES:
            raise ValueError(f"parameter 'dtype' must be one of {', '.join(_DTYPES)}, not {name!r}")
        return _DTYPES[name]

    def _load_model(self):
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

        weights_dir = self.base_dir if self.adapter else self.model_dir
        if not (weights_dir / "config.json").is_file():
            what = "the adapter's base model" if self.adapter else "the model"
            raise FileNotFoundError(f"{what} has no config.json under {weights_dir}")
        kwargs = {"dtype": self.dtype}
        if self.task == CLASSIFICATION:
            base_config = AutoConfig.from_pretrained(str(weights_dir))
            labels = [str(x) for x in self.card.get("labels") or []]
            if not labels:
                own = base_config if not self.adapter else AutoConfig.from_pretrained(str(self.model_dir))
                id2label = getattr(own, "id2label", None) or {}
                labels = [str(id2label[i]) for i in sorted(id2label, key=int)]
            self.labels = labels
            base_config.num_labels = len(labels)
            base_config.id2label = dict(enumerate(labels))
            base_config.label2id = {label: i for i, label in enumerate(labels)}
            model = AutoModelForSequenceClassification.from_pretrained(str(weights_dir), config=base_config, **kwargs)
        elif self.task == GENERATION:
            model = AutoModelForCausalLM.from_pretrained(str(weights_dir), **kwargs)
        else:
            model = AutoModel.from_pretrained(str(weights_dir), **kwargs)
        if self.adapter:
            from peft import PeftModel

            # A classification adapter carries its trained head (peft's modules_to_save): restored
            # here, then merged with the LoRA weights into plain modules for faster inference.
            model = PeftModel.from_pretrained(model, str(self.model_dir)).merge_and_unload()
        return model

    def _max_length(self):
        if self.params.get("max_length"):
            return int(self.params["max_length"])
        limits = []
        st = _read_json((self.base_dir if self.adapter else self.model_dir) / "sentence_bert_config.json")
        if self.task == EMBEDDING and st.get("max_seq_length"):
            limits.append(int(st["max_seq_length"]))
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions"):
            if getattr(config, key, None):
                limits.append(int(getattr(config, key)))
        tokenizer_max = getattr(self.tokenizer, "model_max_length", None)
        if tokenizer_max and tokenizer_max < 1_000_000:
            limits.append(int(tokenizer_max))
        return min(limits) if limits else 512

    # Serving.
    def execute(self, requests):
        if self.task == GENERATION:
            for request in requests:
                self._generate(request)
            return None
        return self._batched(requests)

    def _batched(self, requests):
        """Classification and embedding: every valid request's texts in one pass (chunked)."""
        texts, spans, responses = [], [], [None] * len(requests)
        for i, request in enumerate(requests):
            try:
                mine = _texts(request, "TEXT")
            except InputError as exc:
                responses[i] = _error(str(exc))
                continue
            spans.append((i, len(texts), len(texts) + len(mine)))
            texts.extend(mine)
        if texts:
            try:
                outputs = self._run(texts)
            except Exception as exc:  # a failed batch fails its requests, not the model
                for i, _, _ in spans:
                    responses[i] = _error(f"inference failed: {type(exc).__name__}: {exc}", invalid=False)
                return responses
            for i, start, end in spans:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(name, value[start:end]) for name, value in outputs]
                )
        return responses

    @torch.inference_mode()
    def _run(self, texts):
        parts = []
        for start in range(0, len(texts), BATCH_CHUNK):
            chunk = texts[start : start + BATCH_CHUNK]
            enc = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            ).to(self.device)
            if self.task == CLASSIFICATION:
                logits = self.model(**enc).logits.float()
                parts.append(torch.softmax(logits, dim=-1).cpu().numpy())
            else:
                hidden = self.model(**enc).last_hidden_state.float()
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                tokens = enc["attention_mask"].sum(dim=1, keepdim=True).to(torch.int32)
                parts.append((pooled.cpu().numpy(), tokens.cpu().numpy()))
        if self.task == CLASSIFICATION:
            scores = np.concatenate(parts).astype(np.float32)
            labels = np.array(
                [self.labels[int(k)].encode("utf-8") for k in scores.argmax(axis=1)], dtype=np.object_
            ).reshape(-1, 1)
            return [("LABEL", labels), ("SCORES", scores)]
        embeddings = np.concatenate([p[0] for p in parts]).astype(np.float32)
        tokens = np.concatenate([p[1] for p in parts]).astype(np.int32)
        return [("EMBEDDING", embeddings), ("TOKENS", tokens)]

    # Generation (decoupled: the response sender streams each request's responses).
    def _generate(self, request):
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            prompt, max_tokens, temperature = self._generation_inputs(request)
        except InputError as exc:
            sender.send(_error(str(exc)), flags=final)
            return
        try:
            self._stream(sender, prompt, max_tokens, temperature)
        except Exception as exc:
            sender.send(_error(f"generation failed: {type(exc).__name__}: {exc}", invalid=False), flags=final)

    def _generation_inputs(self, request):
        prompts = _texts(request, "PROMPT")
        if len(prompts) != 1:
            raise InputError("PROMPT must hold one text")
        max_tokens = _scalar(request, "MAX_TOKENS", int)
        if max_tokens is None:
            max_tokens = int(self.params.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        if max_tokens < 1:
            raise InputError("MAX_TOKENS must be at least 1")
        temperature = _scalar(request, "TEMPERATURE", float)
        if temperature is None:
            temperature = float(self.params.get("temperature") or DEFAULT_TEMPERATURE)
        if not np.isfinite(temperature) or temperature < 0:
            raise InputError("TEMPERATURE must be a finite number >= 0")
        return prompts[0], max_tokens, temperature

    def _eos_ids(self):
        ids = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif value:
                ids.update(int(v) for v in value)
        if not ids and self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    def _decode(self, ids):
        # Without clean-up, decoding only ever extends the text as tokens come, so the deltas sent
        # so far stay a prefix of the final text.
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    @torch.inference_mode()
    def _stream(self, sender, prompt, max_tokens, temperature):
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not prompt_ids:
            raise InputError("PROMPT has no tokens")
        if len(prompt_ids) >= self.max_length:
            sender.send(
                _error(f"PROMPT has {len(prompt_ids)} tokens; the model takes at most {self.max_length - 1}"),
                flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL,
            )
            return
        limit = min(max_tokens, self.max_length - len(prompt_ids))
        eos = self._eos_ids()
        generator = None
        if temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.seed()
        top_p = float(self.params.get("top_p") or 1.0)

        input_ids = torch.tensor([prompt_ids], device=self.device)
        past = None
        completion, sent, finish = [], "", ""
        while not finish:
            if getattr(sender, "is_cancelled", None) is not None and sender.is_cancelled():
                sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                return
            out = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1].float()
            token = self._pick(logits, temperature, top_p, generator)
            if token in eos:
                finish = "stop"
            else:
                completion.append(token)
                if len(completion) >= limit:
                    finish = "length"
            text = self._decode(completion)
            # Hold back a partial character (an unfinished byte sequence decodes to U+FFFD).
            ready = text if finish else text.rstrip("\ufffd")
            delta = ready[len(sent) :] if ready.startswith(sent) else ""
            if delta or finish:
                sent += delta
                response = pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("TEXT", np.array([delta.encode("utf-8")], dtype=np.object_)),
                        pb_utils.Tensor("FINISH_REASON", np.array([finish.encode()], dtype=np.object_)),
                        pb_utils.Tensor("PROMPT_TOKENS", np.array([len(prompt_ids)], dtype=np.int32)),
                        pb_utils.Tensor("COMPLETION_TOKENS", np.array([len(completion)], dtype=np.int32)),
                    ]
                )
                sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL if finish else 0)
            input_ids = torch.tensor([[token]], device=self.device)

    @staticmethod
    def _pick(logits, temperature, top_p, generator):
        if temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        if top_p < 1.0:
            ordered, index = torch.sort(probs, descending=True)
            keep = torch.cumsum(ordered, dim=-1) - ordered < top_p
            probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=generator))

    def finalize(self):
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
