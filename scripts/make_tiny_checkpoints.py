"""Tiny random Hugging Face checkpoints, with golden outputs, for the tests of ``explainer.llm.hf``.

Writes tests/fixtures/models/{tiny-gpt2, tiny-llama, tiny-qwen2}/: a byte-level BPE tokenizer
(about 1,000 tokens, trained with ``tokenizers`` on this repository's README and page texts),
its tokenizer_config.json (special tokens, and a ChatML chat template for the two chat models),
generation_config.json, config.json and float32 safetensors weights from ``transformers`` with a
fixed seed, and golden.npz: what ``transformers`` computes over a fixed prompt of 200+ tokens,
so the tests compare the numpy forward pass against PyTorch without importing it.

The three differ where real checkpoints differ:
    tiny-gpt2   GPT-2: learned positions, LayerNorm, fused Conv1D QKV, tied head; <|endoftext|> last, as in GPT-2
    tiny-llama  SmolLM2-like: RoPE (theta 1e4), grouped-query attention, SwiGLU, tied head, digits split one
                by one, specials at ids 0-2, SmolLM2-135M-Instruct's chat template, config in the classic
                (rope_theta / rope_scaling) format, an Apache-2.0 model card
    tiny-qwen2  Qwen2.5-like: q/k/v biases, untied head, RoPE theta 1e6 with llama3-style scaling, config
                vocab padded above the tokenizer (ids with no token), three weight shards and an index

Weights are initialised wide (std 0.2, norms and biases drawn too) so attention is far from
uniform and every parameter matters. golden.npz holds:
    text, ids                      the prompt and its ids from ``tokenizers``
    hidden_{i}  [T, d]             transformers' hidden_states (0 = embeddings, the last one after the final norm)
    resid_out_last [T, d]          the last block's output, before the final norm (from a hook)
    rows        [R]                query positions kept for the two below (every position would not fit 1.5 MB)
    attn_{l}    [H, R, T]          attention probabilities of those rows (eager attention)
    logits      [R, V]             logits of those rows
    inv_freq    [hd/2]             RoPE inverse frequencies (RoPE models), and for tiny-llama
    inv_freq_linear_2              the same under linear scaling with factor 2

Run from the repository root (needs the ``train`` extra: torch, tokenizers, transformers):

    .venv/bin/python scripts/make_tiny_checkpoints.py
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "models"
SEED = 1234
VOCAB = 1000

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen2.5-Instruct's ChatML template in shape (tools block, default system prompt, tool calls and
# responses), with its own default system sentence.
QWEN2_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Tiny Qwen, a random test model. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Tiny Qwen, a random test model. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

PROSE = (
    "A request to a language model travels through many stages before the first token comes back. "
    "The gateway checks the API key and the rate limit (120 requests per minute, 40,000 tokens), "
    "the tokenizer cuts the text into pieces, and the model reads them all at once: the prefill. "
    "In 2024 a model with 135M parameters ran at 50 tokens/s on a laptop; café, naïve and 日本語 "
    "go byte by byte when no merge covers them!   Indented text,\n\n\tnew lines and    runs of spaces "
    "are kept. Can't, won't, I'm, you'll, they'd: contractions split as the pattern says."
)


def training_texts() -> list[str]:
    """The README and the text of every page template: enough English, markup and code for 1,000 tokens."""
    texts = [(ROOT / "README.md").read_text()]
    for path in sorted((ROOT / "templates").rglob("*.html")):
        html = path.read_text()
        texts.append(re.sub(r"\s*\n\s*", "\n", re.sub(r"<[^>]+>|\{[%{#].*?[%}#]\}", " ", html)))
    return texts + [PROSE]


def make_tokenizer(kind: str) -> Tokenizer:
    """A byte-level BPE shaped like the family's: GPT-2's, SmolLM2's (digits one by one) or Qwen2's (NFC + regex split)."""
    tok = Tokenizer(models.BPE())
    if kind == "qwen2":
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    elif kind == "llama":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    chat = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    first = chat if kind == "llama" else []  # SmolLM2 puts its specials at ids 0..; GPT-2 and Qwen2 after the BPE vocabulary
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=first, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(training_texts(), trainer)
    if kind == "gpt2":
        tok.add_special_tokens(["<|endoftext|>"])
    elif kind == "qwen2":
        tok.add_special_tokens(chat)
    return tok


def tokenizer_config(tok: Tokenizer, kind: str) -> dict:
    added = {str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for i, t in sorted(tok.get_added_tokens_decoder().items())}
    common = {"add_prefix_space": False, "added_tokens_decoder": added, "clean_up_tokenization_spaces": False,
              "model_max_length": 512, "tokenizer_class": "GPT2Tokenizer"}
    if kind == "gpt2":
        return {**common, "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    if kind == "llama":
        return {**common, "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                "unk_token": "<|endoftext|>", "chat_template": SMOLLM2_TEMPLATE}
    return {**common, "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "errors": "replace", "split_special_tokens": False, "chat_template": QWEN2_TEMPLATE, "tokenizer_class": "Qwen2Tokenizer"}


def model_config(tok: Tokenizer, kind: str):
    n, ids = tok.get_vocab_size(), {s: tok.token_to_id(s) for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    if kind == "gpt2":
        return GPT2Config(vocab_size=n, n_positions=512, n_embd=64, n_layer=2, n_head=4, n_inner=128,
                          activation_function="gelu_new", initializer_range=0.2, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"])
    if kind == "llama":
        return LlamaConfig(vocab_size=n, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, initializer_range=0.2,
                           bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|im_end|>"])
    scaling = {"rope_type": "llama3", "rope_theta": 1000000.0, "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 128}
    return Qwen2Config(vocab_size=(n + 31) // 32 * 32, hidden_size=64, intermediate_size=144, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, rope_parameters=scaling, use_sliding_window=False,
                       initializer_range=0.2, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])


def randomize(model: torch.nn.Module) -> None:
    """Draw norms' gains around 1 and every bias around 0, so a forgotten scale or bias shows in the goldens."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))


def classic_config(folder: Path) -> None:
    """Rewrite config.json in the format of Hub checkpoints made before transformers 5 (rope_theta, rope_scaling)."""
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = None if rope.get("rope_type") == "default" else rope
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def prompt(kind: str) -> str:
    if kind == "gpt2":
        return PROSE + "<|endoftext|>The end. Temperature 0.7 and top-p 0.95 shape the reply."
    return (f"<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\n{PROSE}<|im_end|>\n"
            f"<|im_start|>assistant\nGateway, tokenizer, prefill, decode.<|im_end|>\n")


def golden(model: torch.nn.Module, tok: Tokenizer, kind: str, config) -> dict[str, np.ndarray]:
    text = prompt(kind)
    ids = tok.encode(text).ids
    assert len(ids) >= 200, len(ids)
    blocks = model.transformer.h if kind == "gpt2" else model.model.layers
    outs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_hook(lambda m, i, o, l=l: outs.__setitem__(l, o[0] if isinstance(o, tuple) else o))
             for l, b in enumerate(blocks)]
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True, output_attentions=True, use_cache=False)
    for h in hooks:
        h.remove()
    T = len(ids)
    rows = np.unique(np.r_[np.arange(0, 6), np.arange(6, T, 12), np.arange(T - 6, T)])
    g = {"text": np.array(text), "ids": np.array(ids, np.int64), "rows": rows,
         "logits": out.logits[0].numpy()[rows]}
    for i, h in enumerate(out.hidden_states):
        g[f"hidden_{i}"] = h[0].numpy()
    for l, a in enumerate(out.attentions):
        g[f"attn_{l}"] = a[0].numpy()[:, rows]
    g["resid_out_last"] = outs[len(blocks) - 1].reshape(T, -1).numpy()  # the others are hidden_{l+1}
    if kind != "gpt2":
        g["inv_freq"] = model.model.rotary_emb.inv_freq.numpy()
    if kind == "llama":
        linear = copy.deepcopy(config)
        linear.rope_parameters = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
        g["inv_freq_linear_2"] = ROPE_INIT_FUNCTIONS["linear"](linear)[0].numpy()
    return g


CARDS = {
    "gpt2": "---\nlicense: mit\n---\n# tiny-gpt2\n\nA GPT-2-shaped model with random weights, for tests only.\n",
    "llama": "---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# tiny-llama\n\nA SmolLM2-shaped model with random weights, for tests only.\n",
}


def make(kind: str) -> Path:
    folder = OUT / f"tiny-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    torch.manual_seed(SEED)
    tok = make_tokenizer(kind)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(tok, kind), indent=2, ensure_ascii=False) + "\n")
    config = model_config(tok, kind)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    randomize(model)
    model.save_pretrained(folder, max_shard_size="300KB" if kind == "qwen2" else "50GB")
    model.generation_config.save_pretrained(folder)
    if kind == "llama":
        classic_config(folder)
    if kind in CARDS:
        (folder / "README.md").write_text(CARDS[kind])
    # Goldens from the checkpoint as saved: what transformers makes of these files, not of the objects above.
    reloaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    for (a, p), (b, q) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        assert a == b and torch.equal(p, q), a
    np.savez_compressed(folder / "golden.npz", **golden(reloaded, tok, kind, reloaded.config))
    return folder


def main() -> None:
    for kind in ("gpt2", "llama", "qwen2"):
        folder = make(kind)
        print(f"{folder.relative_to(ROOT)}/  {sum(p.stat().st_size for p in folder.iterdir()) / 1024:.0f} KiB")
        for p in sorted(folder.iterdir()):
            print(f"    {p.name:40} {p.stat().st_size / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
