"""Build the chat-shaped training corpus from documentation shipped in Debian packages.

The build is reproducible: files are read in sorted order, every choice (question
template, system prompt, train/validation split) is a hash of the source path and
heading, never a random draw.

Usage::

    apt-get install python3.11-doc python-django-doc postgresql-doc-15
    python -m explainer.llm.training.corpus --out data/corpus
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

SOURCES = [
    {
        "name": "Python 3.11 documentation",
        "package": "python3.11-doc",
        "root": "/usr/share/doc/python3.11-doc/html",
        "licence": "PSF License Agreement (Python Software Foundation License Version 2)",
        "skip": ("genindex", "py-modindex", "search", "whatsnew/changelog", "license", "bugs", "copyright", "about", "_static", "_sources"),
    },
    {
        "name": "Django 3.2 documentation",
        "package": "python-django-doc",
        "root": "/usr/share/doc/python-django-doc/html",
        "licence": "BSD-3-Clause (Django Software Foundation and individual contributors)",
        "skip": ("genindex", "py-modindex", "search", "releases/", "_static", "_sources", "internals/deprecation"),
    },
    {
        "name": "PostgreSQL 15 documentation",
        "package": "postgresql-doc-15",
        "root": "/usr/share/doc/postgresql-doc-15/html",
        "licence": "PostgreSQL Licence (BSD-style; The PostgreSQL Global Development Group)",
        "skip": ("bookindex", "release-", "legalnotice", "biblio"),
    },
]

SYSTEM_PROMPTS = [
    None,
    "You are a helpful assistant for software engineers.",
    "Answer clearly and accurately.",
    "You explain technical documentation in plain English.",
    "You are a concise technical writer.",
]

QUESTIONS = [
    "What is {h}?",
    "Can you explain {h}?",
    "Tell me about {h}.",
    "How does {h} work?",
    "What should I know about {h}?",
    "Explain {h} in {doc}.",
    "In {doc}, what does the section on {h} say?",
]

SKIP_CLASSES = ("sphinxsidebar", "related", "navheader", "navfooter", "footer", "headerlink", "toc", "breadcrumbs", "nav", "admonition-title", "doc-footer")
BLOCK_TAGS = {"p", "li", "dd", "dt", "pre", "td", "th", "blockquote"}
HEADINGS = {"h1", "h2", "h3", "h4"}
VOID = {"br", "img", "hr", "meta", "link", "input", "col", "area", "base", "wbr", "source"}
MAX_ANSWER_CHARS = 1400
MIN_ANSWER_CHARS = 160
VAL_PERCENT = 3


@dataclass
class Section:
    heading: str
    text: str


class _SectionParser(HTMLParser):
    """Split one HTML page into (heading, prose) sections, skipping navigation."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self._skip_depth = 0  # >0 while inside navigation or scripts
        self._stack: list[tuple[str, bool]] = []
        self._heading: list[str] | None = None
        self._current_heading = ""
        self._blocks: list[str] = []
        self._block: list[str] | None = None
        self._pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            if tag == "br" and self._block is not None:
                self._block.append("\n")
            return
        cls = dict(attrs).get("class") or ""
        skipping = tag in ("script", "style", "nav", "footer") or any(c in cls.split() for c in SKIP_CLASSES)
        self._stack.append((tag, skipping))
        if skipping:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag in HEADINGS:
            self._flush()
            self._heading = []
        elif tag in BLOCK_TAGS and self._block is None and self._heading is None:
            self._block = []
            if tag == "pre":
                self._pre += 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        # pop to the matching tag (HTML in the wild is not always balanced)
        while self._stack:
            open_tag, skipping = self._stack.pop()
            if skipping:
                self._skip_depth -= 1
            if open_tag == tag:
                break
        if self._skip_depth:
            return
        if tag in HEADINGS and self._heading is not None:
            self._current_heading = _clean_heading("".join(self._heading))
            self._heading = None
        elif tag in BLOCK_TAGS and self._block is not None and (tag == "pre") == bool(self._pre):
            text = "".join(self._block)
            if self._pre:
                text = text.strip("\n")
                self._pre = 0
            else:
                text = re.sub(r"\s+", " ", text).strip()
            if text:
                self._blocks.append(text)
            self._block = None

    def handle_data(self, data):
        if self._skip_depth:
            return
        if self._heading is not None:
            self._heading.append(data)
        elif self._block is not None:
            self._block.append(data)

    def _flush(self):
        if self._current_heading and self._blocks:
            self.sections.append(Section(self._current_heading, "\n\n".join(self._blocks)))
        self._blocks = []

    def close(self):
        super().close()
        self._flush()


def _clean_heading(text: str) -> str:
    text = re.sub(r"\s+", " ", text.replace("¶", "")).strip()
    text = re.sub(r"^(Chapter|Appendix)?\s*[A-Z]?[\d.]+\.?\s+", "", text)  # "5.1. Foo" -> "Foo"
    return text.strip(" :")


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _trim(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    # end on a sentence or paragraph boundary when there is one in the last third
    for sep in ("\n\n", ". ", "\n"):
        at = cut.rfind(sep)
        if at > limit * 2 // 3:
            return cut[: at + (1 if sep == ". " else 0)].rstrip()
    return cut.rstrip()


def sections_of(path: Path) -> list[Section]:
    parser = _SectionParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.sections


def conversations(source: dict) -> list[dict]:
    root = Path(source["root"])
    out = []
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if any(s in rel for s in source["skip"]):
            continue
        for sec in sections_of(path):
            if len(sec.text) < MIN_ANSWER_CHARS or not (3 <= len(sec.heading) <= 80):
                continue
            h = _hash(source["package"], rel, sec.heading)
            doc = source["name"].replace(" documentation", "")
            question = QUESTIONS[h % len(QUESTIONS)].format(h=sec.heading, doc=doc)
            system = SYSTEM_PROMPTS[(h >> 8) % len(SYSTEM_PROMPTS)]
            out.append({
                "source": f"{source['package']}:{rel}",
                "split": "val" if (_hash(source["package"], rel) % 100) < VAL_PERCENT else "train",
                "system": system,
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": _trim(sec.text)},
                ],
            })
    return out


def build(out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats = {"sources": []}
    files = {split: (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") for split in ("train", "val")}
    try:
        for source in SOURCES:
            if not Path(source["root"]).is_dir():
                raise SystemExit(f"{source['root']} is missing: apt-get install {source['package']}")
            convs = conversations(source)
            for c in convs:
                files[c["split"]].write(json.dumps(c, ensure_ascii=False) + "\n")
            chars = sum(len(m["content"]) for c in convs for m in c["messages"])
            stats["sources"].append({k: source[k] for k in ("name", "package", "licence")} | {"conversations": len(convs), "characters": chars})
    finally:
        for f in files.values():
            f.close()
    (out_dir / "sources.json").write_text(json.dumps(stats, indent=2))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    print(json.dumps(build(ap.parse_args().out), indent=2))


if __name__ == "__main__":
    main()
