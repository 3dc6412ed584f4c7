"""Train the project's byte-level BPE merge list on the training split of the corpus.

The merge statistics are counted by Hugging Face ``tokenizers`` (fast, training only);
the result is converted to the project's own format, which ``explainer.llm.tokenizer``
applies in pure Python at run time.

Usage::

    python -m explainer.llm.training.train_tokenizer --corpus data/corpus --merges 20000 --model-vocab 4096
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from explainer.llm.tokenizer import PATTERN, SPECIAL_TOKENS, TOKENIZER_PATH, Tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """The printable stand-in character that byte-level BPE (GPT-2 style) uses for each byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in keep:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def texts(corpus: Path):
    with (corpus / "train.jsonl").open(encoding="utf-8") as f:
        for line in f:
            conv = json.loads(line)
            if conv["system"]:
                yield conv["system"]
            for m in conv["messages"]:
                yield m["content"]


def train(corpus: Path, n_merges: int, model_vocab: int) -> Tokenizer:
    from tokenizers import Regex, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=256 + n_merges, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False, min_frequency=2
    )
    hf.train_from_iterator(texts(corpus), trainer)
    raw = json.loads(hf.to_str())["model"]["merges"]
    back = {ch: b for b, ch in _bytes_to_unicode().items()}

    first = 256 + len(SPECIAL_TOKENS)
    ids: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    merges: list[tuple[int, int]] = []
    for m in raw:
        a, b = m.split(" ") if isinstance(m, str) else m
        ab, bb = bytes(back[c] for c in a), bytes(back[c] for c in b)
        merges.append((ids[ab], ids[bb]))
        ids[ab + bb] = first + len(merges) - 1
    return Tokenizer(merges=merges, model_merges=model_vocab - first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--merges", type=int, default=20000)
    ap.add_argument("--model-vocab", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=TOKENIZER_PATH)
    args = ap.parse_args()
    tok = train(args.corpus, args.merges, args.model_vocab)
    tok.save(args.out)
    print(f"{len(tok.merges)} merges, model vocabulary {tok.vocab_size} -> {args.out}")


if __name__ == "__main__":
    main()
