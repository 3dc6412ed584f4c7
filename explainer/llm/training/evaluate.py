"""Behaviour evaluation of the bundled model: do its replies end, stay unrepeated and stay clean?

Usage::

    python -m explainer.llm.training.evaluate                    # figures for the shipped weights
    python -m explainer.llm.training.evaluate --weights other.npz
    python -m explainer.llm.training.evaluate --choose-examples  # re-measure the example prompts

Over the fixed prompts in ``explainer/llm/evaluation/prompts.json``, at seeds 0-4,
temperature 0.7 and max_tokens 160 (what a user of the app gets), it reports:

- the share of replies that end with ``end_turn`` (the model chose to stop);
- the median reply length, in tokens and characters;
- the share of repeated word 3-grams (per reply: 3-grams that already occurred in it,
  over all its 3-grams; averaged over replies);
- blocked words (``explainer/llm/blocklist.txt``) in the replies with the word ban on, and
  in a larger run with the ban off (seeds 0-24 by default: 1,200 replies), which measures
  what the corpus scrub alone achieved.

It writes the figures and five unedited samples to ``explainer/llm/weights/behaviour.json``,
which the model card quotes. ``--choose-examples`` measures the candidates in
``explainer/llm/evaluation/candidates.json`` the same way and keeps, in ``examples.json``,
the ones whose replies end most often and repeat least: the app offers those.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
import zipfile
from pathlib import Path

from explainer.llm.blocklist import find_blocked
from explainer.llm.generate import Finish, GenerationConfig, generate
from explainer.llm.hf.gpt2 import GPT2Model
from explainer.llm.model import WEIGHTS_PATH, bundled_model, read_weights
from explainer.llm.sampling import SamplingParams
from explainer.llm.tokenizer import load_tokenizer

EVAL_DIR = Path(__file__).resolve().parents[1] / "evaluation"
PROMPTS_PATH = EVAL_DIR / "prompts.json"
CANDIDATES_PATH = EVAL_DIR / "candidates.json"
EXAMPLES_PATH = EVAL_DIR / "examples.json"
BEHAVIOUR_PATH = WEIGHTS_PATH.parent / "behaviour.json"
TEMPERATURE, MAX_TOKENS, SEEDS = 0.7, 160, range(5)
N_EXAMPLES = 6


class EvaluationError(Exception):
    """Bad input to the evaluation: the message is one sentence for the user."""


def load_weights(path: Path) -> GPT2Model:
    if not path.is_file():
        raise EvaluationError(f"weights file {path} not found")
    try:
        config, weights, _ = read_weights(path)
        return bundled_model(config, weights)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EvaluationError(f"{path} is not a readable model weights file ({reason})") from None


def load_prompts(path: Path) -> list[str]:
    try:
        prompts = json.loads(path.read_text(encoding="utf-8"))["prompts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EvaluationError(f"{path} is not a prompt list ({type(exc).__name__}: {exc})") from None
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise EvaluationError(f"{path} must hold a non-empty list of prompts")
    return prompts


def repeated_trigram_share(text: str) -> float:
    """Share of a text's word 3-grams that already occurred earlier in it.

    >>> repeated_trigram_share("a b c a b c")
    0.25
    >>> repeated_trigram_share("one two")
    0.0
    """
    words = re.findall(r"\w+", text.lower())
    grams = list(zip(words, words[1:], words[2:]))
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def reply(model: GPT2Model, prompt: str, seed: int, ban: bool = True,
          temperature: float = TEMPERATURE, max_tokens: int = MAX_TOKENS) -> Finish:
    tok = load_tokenizer()
    ids = tok.encode_chat(None, [("user", prompt)])
    cfg = GenerationConfig(max_tokens=max_tokens, sampling=SamplingParams(temperature=temperature), seed=seed,
                           n_candidates=0, ban_words=ban)
    finish = None
    for item in generate(model, tok, ids, cfg):
        if isinstance(item, Finish):
            finish = item
    assert finish is not None
    return finish


def measure(model: GPT2Model, prompts: list[str], seeds=SEEDS, ban: bool = True, progress=None) -> dict:
    rows = []
    for prompt in prompts:
        for seed in seeds:
            f = reply(model, prompt, seed, ban=ban)
            rows.append({"prompt": prompt, "seed": seed, "text": f.text, "stop_reason": f.stop_reason,
                         "tokens": f.output_tokens, "repeat": repeated_trigram_share(f.text),
                         "blocked": find_blocked(f.text)})
            if progress:
                progress(len(rows))
    return {
        "replies": len(rows),
        "end_turn_share": sum(r["stop_reason"] == "end_turn" for r in rows) / len(rows),
        "median_tokens": statistics.median(r["tokens"] for r in rows),
        "median_chars": statistics.median(len(r["text"]) for r in rows),
        "repeated_trigram_share": statistics.fmean(r["repeat"] for r in rows),
        "blocked_words": sum(len(r["blocked"]) for r in rows),
        "replies_with_blocked_words": sum(bool(r["blocked"]) for r in rows),
        "rows": rows,
    }


def choose_examples(model: GPT2Model, candidates: list[str], n: int = N_EXAMPLES) -> dict:
    measured = []
    for prompt in candidates:
        m = measure(model, [prompt])
        measured.append({"prompt": prompt, "end_turn_share": m["end_turn_share"],
                         "repeated_trigram_share": round(m["repeated_trigram_share"], 4),
                         "median_tokens": m["median_tokens"], "blocked_words": m["blocked_words"]})
    eligible = [m for m in measured if m["blocked_words"] == 0]
    eligible.sort(key=lambda m: (-m["end_turn_share"], m["repeated_trigram_share"], m["prompt"]))
    return {
        "about": "Chosen by python -m explainer.llm.training.evaluate --choose-examples: of the candidates, the "
                 f"{n} whose replies (seeds 0-4, temperature {TEMPERATURE}, max_tokens {MAX_TOKENS}) end most often "
                 "and repeat least. Regenerate after retraining.",
        "settings": {"temperature": TEMPERATURE, "max_tokens": MAX_TOKENS, "seeds": list(SEEDS)},
        "examples": [m["prompt"] for m in eligible[:n]],
        "measured": measured,
    }


def _progress(total: int, label: str):
    start = time.time()

    def show(done: int) -> None:
        if done % 20 == 0 or done == total:
            print(f"  {label}: {done}/{total} replies ({time.time() - start:.0f} s)", file=sys.stderr, flush=True)
    return show


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=WEIGHTS_PATH)
    ap.add_argument("--prompts", type=Path, default=PROMPTS_PATH)
    ap.add_argument("--unbanned-seeds", type=int, default=25, help="seeds for the count of blocked words with the ban off")
    ap.add_argument("--out", type=Path, default=None, help=f"where to write the figures (default {BEHAVIOUR_PATH} for the shipped weights)")
    ap.add_argument("--choose-examples", action="store_true", help=f"measure {CANDIDATES_PATH.name} and write {EXAMPLES_PATH.name}")
    ap.add_argument("--tools", action="store_true", help="measure the tool loop on the held-out split (tool_eval)")
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"), help="the built corpus (--tools reads its held-out split)")
    ap.add_argument("--per-kind", type=int, default=30, help="--tools: held-out conversations of each kind, per seed")
    args = ap.parse_args(argv)
    if args.tools:
        return tools_main(args)
    try:
        model = load_weights(args.weights)
        if args.choose_examples:
            held_out = set(load_prompts(PROMPTS_PATH))  # the evaluation's prompts are never offered as examples
            candidates = [p for p in load_prompts(CANDIDATES_PATH) if p not in held_out]
            result = choose_examples(model, candidates)
            EXAMPLES_PATH.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
            print(json.dumps({"examples": result["examples"]}, indent=2, ensure_ascii=False))
            return 0
        prompts = load_prompts(args.prompts)
        banned_on = measure(model, prompts, ban=True, progress=_progress(len(prompts) * len(SEEDS), "ban on"))
        banned_off = measure(model, prompts, seeds=range(args.unbanned_seeds), ban=False,
                             progress=_progress(len(prompts) * args.unbanned_seeds, "ban off"))
    except EvaluationError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    rows = banned_on.pop("rows")
    banned_off.pop("rows")
    figures = {
        "settings": {"prompts": len(prompts), "seeds": list(SEEDS), "temperature": TEMPERATURE, "max_tokens": MAX_TOKENS},
        "with_ban": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in banned_on.items()},
        "without_ban": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in banned_off.items()
                        if k in ("replies", "blocked_words", "replies_with_blocked_words")},
        "samples": [{"prompt": r["prompt"], "seed": r["seed"], "reply": r["text"], "stop_reason": r["stop_reason"]}
                    for r in rows if r["seed"] == 0][:5],
    }
    out = args.out or (BEHAVIOUR_PATH if args.weights.resolve() == WEIGHTS_PATH.resolve() else None)
    if out:
        if out.is_file() and "tools" in (old := json.loads(out.read_text())):
            figures["tools"] = old["tools"]  # written by --tools
        out.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "samples"}, indent=2))
    return 0


def tools_main(args) -> int:
    """``--tools``: the held-out tool loop through the engine, written under ``tools`` in the behaviour file."""
    from explainer.lifecycle.engine import Engine
    from explainer.llm.training import tool_eval

    try:
        model = load_weights(args.weights)
        if not (args.corpus / "val.jsonl").is_file():
            raise EvaluationError(f"{args.corpus} holds no built corpus: run python -m explainer.llm.training.corpus first")
    except EvaluationError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    convs = tool_eval.heldout(args.corpus)
    total = args.per_kind * len(tool_eval.SEEDS) * 5
    figures = tool_eval.measure(Engine(model=model), convs, per_kind=args.per_kind, progress=_progress(total, "tools"))
    out = args.out or (BEHAVIOUR_PATH if args.weights.resolve() == WEIGHTS_PATH.resolve() else None)
    if out:
        whole = json.loads(out.read_text()) if out.is_file() else {}
        whole["tools"] = figures
        out.write_text(json.dumps(whole, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "samples"}, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
