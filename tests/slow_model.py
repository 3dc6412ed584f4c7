"""A local model that is slow for real: a random Llama-family checkpoint of 26M parameters with a 2,048-token
window, and a prompt that fills most of it. Its prefill is seconds of numpy on one core (about 150 GFLOP),
the work a hostile or merely large local model puts on the server; the tests stop it part way."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from tests.conftest import FIXTURE_MODELS

NAME = "slow-llama"
LAYERS, D, HEADS, KV_HEADS, FF, VOCAB, WINDOW = 8, 512, 8, 4, 1536, 1000, 2048


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for a in tensors.values():
            f.write(a.tobytes())


def make_slow_model(root: Path) -> Path:
    """Write the folder into ``root`` (a models directory) as ``manage.py models add`` would leave it."""
    folder = root / NAME
    folder.mkdir(parents=True)
    tiny = FIXTURE_MODELS / "tiny-llama"
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tiny / f, folder / f)
    config = json.loads((tiny / "config.json").read_text())
    hd = D // HEADS
    config.update(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                  head_dim=hd, intermediate_size=FF, vocab_size=VOCAB, max_position_embeddings=WINDOW, dtype="float16")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    tensors = {"model.embed_tokens.weight": w(VOCAB, D), "model.norm.weight": np.ones(D, np.float16)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        tensors |= {p + "input_layernorm.weight": np.ones(D, np.float16), p + "post_attention_layernorm.weight": np.ones(D, np.float16),
                    p + "self_attn.q_proj.weight": w(HEADS * hd, D), p + "self_attn.k_proj.weight": w(KV_HEADS * hd, D),
                    p + "self_attn.v_proj.weight": w(KV_HEADS * hd, D), p + "self_attn.o_proj.weight": w(D, HEADS * hd),
                    p + "mlp.gate_proj.weight": w(FF, D), p + "mlp.up_proj.weight": w(FF, D), p + "mlp.down_proj.weight": w(D, FF)}
    _safetensors(folder / "model.safetensors", tensors)
    return folder


# About 1,900 of the window's 2,048 tokens with the chat template around it (the fixture's tokenizer reads
# each of these words as about three tokens): the prefill is the slow part, and there is room for a reply.
LONG_PROMPT = "Explain why the write ahead log matters for durable storage engines. " * 56


def long_request(model: str = NAME, max_tokens: int = 64, **extra) -> dict:
    return {"model": model, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": LONG_PROMPT}], **extra}


class Stream:
    """A streamed API call read line by line as it arrives (http.client: the SDK would retry, buffer or hide
    how the stream ended). ``close()`` hangs up, as a client that goes away does."""

    def __init__(self, url: str, body: dict, headers: dict, timeout: float = 60):
        import http.client
        from urllib.parse import urlsplit

        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.conn.request("POST", "/v1/messages", body=json.dumps(body),
                          headers={**headers, "content-type": "application/json"})
        self.response = self.conn.getresponse()
        self.events: list[dict] = []

    def next_event(self) -> dict | None:
        """The next event's data (None at the end of the stream)."""
        while True:
            line = self.response.readline()
            if not line:
                return None
            if line.startswith(b"data: "):
                self.events.append(json.loads(line[6:]))
                return self.events[-1]

    def until(self, kind: str) -> dict | None:
        while (event := self.next_event()) is not None:
            if event["type"] == kind:
                return event
        return None

    def rest(self) -> list[dict]:
        out = []
        while (event := self.next_event()) is not None:
            out.append(event)
        return out

    def close(self) -> None:
        self.conn.sock.close() if self.conn.sock else None
        self.conn.close()
