"""A random-weight checkpoint with SmolLM2-135M-Instruct's exact shapes, for bench/model.py --model.

    .venv/bin/pip install -e ".[train]"        # transformers, tokenizers, torch: this script only
    .venv/bin/python scripts/make_random_checkpoint.py [--out var/bench/smollm2-135m-random]

The real model's config (30 layers, width 576, 9 heads sharing 3 key/value heads, SwiGLU of 1536,
RoPE theta 100,000, tied embeddings, a 49,152-token vocabulary, bfloat16 on disk) with weights drawn at
random by transformers, and a byte-level BPE of the same size trained here (SmolLM2's pre-tokenizer:
single digits, then GPT-2's byte-level split) with its ChatML template. Speed does not depend on what
the weights say, so this measures what a downloaded SmolLM2-135M-Instruct costs, without the network.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "hidden_act": "silu", "hidden_size": 576,
    "initializer_range": 0.041666666666666664, "intermediate_size": 1536, "max_position_embeddings": 8192,
    "mlp_bias": False, "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 100000,
    "tie_word_embeddings": True, "vocab_size": 49152,
}
# SmolLM2-135M-Instruct's template (tokenizer_config.json on the Hub).
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus(limit_bytes: int = 40_000_000):
    """Enough varied text for 49k merges: the Python sources and docs installed in the venv and this repo."""
    seen = 0
    roots = [ROOT / "explainer", ROOT / "templates", ROOT / "docs", Path(sys.prefix) / "lib"]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.suffix not in (".py", ".md", ".html", ".txt", ".rst") or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            seen += len(text)
            yield text
            if seen > limit_bytes:
                return


def make_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=CONFIG["vocab_size"], special_tokens=SPECIALS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "model_max_length": 8192, "chat_template": CHAT_TEMPLATE, "tokenizer_class": "GPT2Tokenizer"}, indent=2))
    print(f"tokenizer: {tok.get_vocab_size():,} tokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "smollm2-135m-random")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    args.out.mkdir(parents=True, exist_ok=True)
    make_tokenizer(args.out)
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).to(torch.bfloat16)
    model.save_pretrained(args.out, safe_serialization=True)
    GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2).save_pretrained(args.out)
    (args.out / "README.md").write_text("---\nlicense: apache-2.0\n---\nRandom weights with SmolLM2-135M-Instruct's shapes, for benchmarks.\n")
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {n / 1e6:.1f}M parameters, bfloat16")


if __name__ == "__main__":
    main()
