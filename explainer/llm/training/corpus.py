"""Build the chat-shaped training corpus from documentation shipped in Debian packages.

Every assistant turn is a short, complete answer: the first paragraph or two of a
passage that answers its heading directly, cut at a sentence boundary to at most
``MAX_ANSWER_CHARS`` characters. The training stream ends every answer with the
end-of-turn token, so the model learns the shape of a reply: a few sentences, then stop.

Passages, in the order they are preferred:

- glossary entries (Python, Django, PostgreSQL glossaries: "What is a …?");
- the description of a documented function, class, exception or setting ("What does
  json.loads() do?", "What does the work_mem setting do?");
- FAQ entries (their heading is already a question);
- the first paragraph of a section or a page, with its heading turned into a question a
  person would ask ("Using the ORM" -> "How do I use the ORM?").

Passages whose text contains a blocked word (``explainer/llm/blocklist.txt``) are dropped.

After the text, ``train.jsonl`` gets the tool-use conversations of ``tool_corpus`` (calls, text
answers with tools offered, answers to a tool result), and ``tools_heldout.jsonl`` the held-out
ones that ``evaluate --tools`` measures.

The build is reproducible: files are read in sorted order and every choice (question
wording, system prompt, train/validation split) is a hash of the source path and the
passage's key, never a random draw.

Usage::

    apt-get install python3.11-doc python-django-doc postgresql-doc-15 python-flask-doc \
        python-werkzeug-doc python-jinja2-doc python-click-doc python-requests-doc python-sqlalchemy-doc
    python -m explainer.llm.training.corpus --out data/corpus
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, Tag, XMLParsedAsHTMLWarning

from explainer.llm.blocklist import find_blocked
from explainer.llm.training import tool_corpus


def _sphinx(name: str, package: str, licence: str, changes: str) -> dict:
    """A Sphinx-built documentation package: its index pages, sources and changelog are skipped."""
    return {"name": f"{name} documentation", "package": package, "root": f"/usr/share/doc/{package}/html",
            "licence": licence, "skip": ("genindex", "py-modindex", "search", changes, "license", "copyright",
                                          "_static", "_sources", "_modules")}


SOURCES = [
    {
        "name": "Python 3.11 documentation",
        "package": "python3.11-doc",
        "root": "/usr/share/doc/python3.11-doc/html",
        "licence": "PSF License Agreement (Python Software Foundation License Version 2)",
        "skip": ("genindex", "py-modindex", "search", "whatsnew/", "license", "bugs", "copyright", "about", "_static", "_sources", "c-api/", "extending/"),
    },
    {
        "name": "Django 3.2 documentation",
        "package": "python-django-doc",
        "root": "/usr/share/doc/python-django-doc/html",
        "licence": "BSD-3-Clause (Django Software Foundation and individual contributors)",
        "skip": ("genindex", "py-modindex", "search", "releases/", "_static", "_sources", "_modules", "internals/"),
    },
    {
        "name": "PostgreSQL 15 documentation",
        "package": "postgresql-doc-15",
        "root": "/usr/share/doc/postgresql-doc-15/html",
        "licence": "PostgreSQL Licence (BSD-style; The PostgreSQL Global Development Group)",
        "skip": ("bookindex", "release-", "legalnotice", "biblio", "docguide", "sourcerepo", "errcodes-appendix"),
    },
    *(_sphinx(name, package, licence, changes) for name, package, licence, changes in (
        ("Flask 2.2", "python-flask-doc", "BSD-3-Clause (Pallets)", "changes"),
        ("Werkzeug 2.2", "python-werkzeug-doc", "BSD-3-Clause (Pallets)", "changes"),
        ("Jinja 3.0", "python-jinja2-doc", "BSD-3-Clause (Pallets)", "changes"),
        ("Click 8.1", "python-click-doc", "BSD-3-Clause (Pallets)", "changes"),
        ("Requests 2.28", "python-requests-doc", "Apache-2.0 (Kenneth Reitz and contributors)", "community/updates"),
        ("SQLAlchemy 1.4", "python-sqlalchemy-doc", "MIT (the SQLAlchemy authors and contributors)", "changelog/"),
    )),
]

SYSTEM_PROMPTS = [
    None,
    None,
    "You are a helpful assistant for software engineers.",
    "Answer clearly and briefly.",
    "You explain technical documentation in plain English.",
    "You are a concise technical writer.",
]

TOOL_CONVERSATIONS, TOOL_HELDOUT = 20000, 600  # tool_corpus: the split the model trains on, the one it is measured on

MAX_ANSWER_CHARS = 420
MIN_ANSWER_CHARS = 90
VAL_PERCENT = 3

# Headings that name a part of a page, not a topic: they make no question on their own.
GENERIC_HEADINGS = {
    "introduction", "overview", "examples", "example", "notes", "note", "summary", "description",
    "parameters", "see also", "synopsis", "options", "outputs", "compatibility", "footnotes",
    "environment", "files", "diagnostics", "usage", "details", "background", "contents",
    "table of contents", "index", "discussion", "conclusion", "limitations", "caveats", "arguments",
    "return value", "exit status", "bugs", "author", "history", "authors", "quick links", "navigation",
    "prerequisites", "what’s next?", "what's next?", "where to get help", "getting help", "next steps",
    "functions", "classes", "methods", "attributes", "exceptions", "constants", "module contents",
    "api reference", "reference", "settings", "fields", "available settings", "core settings",
}

# The gerunds that open how-to headings, with their base form ("Using X" -> "How do I use X?").
GERUNDS = {
    "using": "use", "creating": "create", "writing": "write", "running": "run", "installing": "install",
    "defining": "define", "adding": "add", "handling": "handle", "reading": "read", "making": "make",
    "configuring": "configure", "setting": "set", "getting": "get", "working": "work", "testing": "test",
    "deploying": "deploy", "managing": "manage", "extending": "extend", "customizing": "customize",
    "changing": "change", "controlling": "control", "specifying": "specify", "serving": "serve",
    "storing": "store", "building": "build", "calling": "call", "passing": "pass", "importing": "import",
    "choosing": "choose", "limiting": "limit", "connecting": "connect", "embedding": "embed",
    "migrating": "migrate", "upgrading": "upgrade", "combining": "combine", "querying": "query",
    "logging": "log", "sending": "send", "starting": "start", "avoiding": "avoid", "executing": "execute",
    "loading": "load", "opening": "open", "overriding": "override", "registering": "register",
    "selecting": "select", "sorting": "sort", "comparing": "compare", "formatting": "format",
    "filtering": "filter", "caching": "cache", "raising": "raise", "catching": "catch",
    "converting": "convert", "debugging": "debug", "packaging": "package", "parsing": "parse",
    "processing": "process", "inserting": "insert", "updating": "update", "deleting": "delete",
    "modifying": "modify", "removing": "remove", "monitoring": "monitor", "tuning": "tune",
    "securing": "secure", "backing": "back", "restoring": "restore", "translating": "translate",
    "authenticating": "authenticate", "validating": "validate", "generating": "generate",
    "displaying": "display", "providing": "provide", "accessing": "access", "following": "follow",
    "organizing": "organize", "writing:": "write", "implementing": "implement", "declaring": "declare",
    "populating": "populate", "retrieving": "retrieve", "saving": "save", "serializing": "serialize",
    "subclassing": "subclass", "decorating": "decorate", "indexing": "index", "joining": "join",
    "grouping": "group", "counting": "count", "copying": "copy", "moving": "move", "renaming": "rename",
    "partitioning": "partition", "replicating": "replicate", "locking": "lock", "enabling": "enable",
    "disabling": "disable", "reporting": "report", "checking": "check", "measuring": "measure",
    "profiling": "profile", "compiling": "compile", "iterating": "iterate", "mapping": "map",
    "packing": "pack", "unpacking": "unpack", "encoding": "encode", "decoding": "decode",
    "sharing": "share", "scheduling": "schedule", "shutting": "shut", "signing": "sign",
}

_SENTENCE_END = re.compile(r"[.!?](?:[\"'”’)\]]*)(?=\s|$)")
_SPACE = re.compile(r"\s+")


@dataclass
class Passage:
    kind: str  # glossary | api | setting | faq | section
    key: str  # what the question is about, as it reads in the question
    text: str  # the answer, already cut
    subkind: str = ""  # api: function | method | class | exception | attribute | data


def _hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big")


def _clean(text: str) -> str:
    return _SPACE.sub(" ", text.replace("¶", "")).strip()


def cut_answer(paragraphs: list[str], limit: int = MAX_ANSWER_CHARS, minimum: int = MIN_ANSWER_CHARS) -> str | None:
    """Join paragraphs into an answer of at most ``limit`` characters that ends a sentence.

    Whole paragraphs are added while they fit; a paragraph that does not fit is cut at
    its last sentence end inside the limit. ``None`` when no complete answer of at least
    ``minimum`` characters can be made.

    >>> cut_answer(["A list is a sequence. It can grow. More text follows here."], limit=40, minimum=10)
    'A list is a sequence. It can grow.'
    >>> cut_answer(["too short."]) is None
    True
    """
    out = ""
    for para in paragraphs:
        para = para.strip()
        if not para:
            continue
        joined = f"{out}\n\n{para}" if out else para
        if len(joined) <= limit and _SENTENCE_END.search(para[-3:] + " "):
            out = joined
            continue
        room = limit - (len(out) + 2 if out else 0)
        ends = [m.end() for m in _SENTENCE_END.finditer(para) if m.end() <= room]
        if ends and ends[-1] >= 40:
            part = para[: ends[-1]]
            if not re.search(r"\b(e\.g|i\.e|etc|vs|cf|Fig|No)\.$", part):
                out = f"{out}\n\n{part}" if out else part
        break
    if len(out) < minimum or out.endswith(":"):
        return None
    return out


def _prose_of(node: Tag) -> list[str]:
    """The paragraphs of prose directly under ``node`` (code, tables and nested entries skipped)."""
    paras: list[str] = []
    for child in node.children:
        if not isinstance(child, Tag):
            continue
        if child.name == "p":
            paras.append(_clean(child.get_text(" ")))
        elif child.name in ("div", "section") and not (set(child.get("class") or ()) & {"highlight", "highlight-python3", "highlight-default", "admonition", "note", "warning", "versionchanged", "versionadded", "deprecated", "seealso", "tip", "caution", "important"}):
            if any(c.startswith("highlight") for c in (child.get("class") or ())):
                break
            if child.find(["h1", "h2", "h3", "h4", "h5"]):
                break
            paras.extend(_prose_of(child))
        else:
            # code, a list, a table or a nested definition: the answer stops before it
            if paras:
                break
            if child.name in ("pre", "table", "dl", "ul", "ol"):
                break
    # inline spacing left by get_text(" ")
    return [re.sub(r"\s+([,.;:)?!])", r"\1", re.sub(r"([(])\s+", r"\1", p)) for p in paras if p]


def _heading_text(h: Tag) -> str:
    text = _clean(h.get_text(" "))
    text = re.sub(r"\s+([,.;:)?!])", r"\1", text)
    text = re.sub(r"^(Chapter|Appendix|Part)?\s*[A-Z]?[\dIVX.]+\.?\s+", "", text)  # "5.1. Foo" -> "Foo"
    return text.strip(" :")


def _glossary(soup: BeautifulSoup) -> list[Passage]:
    out = []
    for dl in soup.select("dl.glossary, div.glosslist > dl"):
        for dt in dl.find_all("dt", recursive=False):
            dd = dt.find_next_sibling("dd")
            if dd is None:
                continue
            term = _clean(dt.get_text(" "))
            answer = cut_answer(_prose_of(dd))
            if answer and 2 <= len(term) <= 60 and not term.startswith((">", ".", "_")):
                out.append(Passage("glossary", term, answer))
    return out


def _api(soup: BeautifulSoup) -> list[Passage]:
    out = []
    for dl in soup.select("dl.py"):
        kinds = set(dl.get("class") or ()) & {"function", "method", "class", "exception", "attribute", "data"}
        if not kinds:
            continue
        dt = dl.find("dt", recursive=False)
        dd = dl.find("dd", recursive=False)
        if dt is None or dd is None or not dt.get("id"):
            continue
        name = dt["id"]
        if not re.fullmatch(r"[A-Za-z_][\w.]*", name) or name.count(".") > 3:
            continue
        answer = cut_answer(_prose_of(dd))
        if answer:
            out.append(Passage("api", name, answer, kinds.pop()))
    return out


def _pg_settings(soup: BeautifulSoup) -> list[Passage]:
    out = []
    for dl in soup.select("div.variablelist > dl"):
        for dt in dl.find_all("dt", recursive=False):
            var = dt.find("code", class_="varname")
            dd = dt.find_next_sibling("dd")
            if var is None or dd is None or not dt.get("id", "").startswith("GUC-"):
                continue
            answer = cut_answer(_prose_of(dd))
            if answer:
                out.append(Passage("setting", _clean(var.get_text()), answer))
    return out


def _sections(soup: BeautifulSoup, faq: bool) -> list[Passage]:
    out = []
    title = ""
    for h in soup.find_all(["h1", "h2", "h3", "h4"]):
        if h.find_parent(class_=["sphinxsidebar", "related", "navheader", "navfooter", "footer", "toc", "nav"]) or h.find_parent("nav"):
            continue
        heading = _heading_text(h)
        if h.name == "h1":
            title = heading
        if not (3 <= len(heading) <= 70) or heading.lower() in GENERIC_HEADINGS:
            continue
        # the paragraphs that follow the heading, up to the next heading
        # DocBook pages (PostgreSQL) wrap a heading in title divs: climb to the block that has siblings
        anchor = h
        while anchor.parent is not None and anchor.parent.name == "div" and anchor.find_next_sibling() is None:
            anchor = anchor.parent
        paras: list[str] = []
        for sib in anchor.find_next_siblings():
            if sib.name in ("h1", "h2", "h3", "h4", "h5"):
                break
            if sib.name == "p":
                paras.append(_clean(sib.get_text(" ")))
            elif sib.name in ("div", "section") and not sib.find(["h1", "h2", "h3", "h4"]) and not any(c.startswith("highlight") or c in ("admonition", "note", "warning", "toctree-wrapper") for c in (sib.get("class") or ())):
                paras.extend(_prose_of(sib))
            elif paras:
                break
            elif sib.name in ("pre", "table", "ul", "ol", "dl"):
                break
            if sum(len(p) for p in paras) > MAX_ANSWER_CHARS:
                break
        paras = [re.sub(r"\s+([,.;:)?!])", r"\1", p) for p in paras if p]
        answer = cut_answer(paras)
        if not answer:
            continue
        if faq and heading.endswith("?"):
            out.append(Passage("faq", heading, answer))
        elif not heading.endswith("?"):
            out.append(Passage("section", heading, answer, "title" if heading == title else ""))
    return out


_PROPER = {"Python", "Django", "PostgreSQL", "SQL", "Unicode", "Windows", "Unix", "Linux", "I", "JSON", "HTTP",
           "Flask", "Werkzeug", "Jinja", "Click", "Requests", "SQLAlchemy", "ORM", "Boolean", "Jinja2", "WSGI", "ASGI", "Python's"}
_ACRONYM = re.compile(r"^[A-Z0-9]{2,}|^[A-Z][a-z]+[A-Z]|[._()]")


def _lower_first(phrase: str) -> str:
    words = phrase.split(" ")
    if len(words) > 1 and sum(w[:1].isupper() for w in words) * 2 > len(words):
        # Title Case headings ("Check Constraints"): lower every plain capitalised word after the first
        words = [words[0]] + [w if (_ACRONYM.search(w) or w in _PROPER) else w[:1].lower() + w[1:] for w in words[1:]]
        phrase = " ".join(words)
    first = words[0]
    if _ACRONYM.search(first) or first in _PROPER:
        return phrase
    return phrase[:1].lower() + phrase[1:]


def _plural(phrase: str) -> bool:
    last = phrase.split()[-1].lower() if phrase.split() else ""
    return last.endswith("s") and not last.endswith(("ss", "us", "is", "ics", "os")) and len(last) > 3


def question(p: Passage, doc: str, h: int) -> str:
    """Turn a passage's heading or term into a question a person would ask.

    >>> question(Passage("section", "Using the ORM", ""), "Django", 0)
    'How do I use the ORM?'
    >>> question(Passage("api", "json.loads", "", "function"), "Python", 0)
    'What does json.loads() do?'
    """
    k = p.key
    pick = lambda options: options[h % len(options)]  # noqa: E731
    if p.kind == "faq":
        return k
    if p.kind == "api":
        if p.subkind in ("function", "method"):
            return pick([f"What does {k}() do?", f"What does {k}() do?", f"What is {k}() for?", f"How do I use {k}()?"])
        if p.subkind == "class":
            return pick([f"What is the {k} class?", f"What is {k} in {doc}?", f"What does the {k} class do?"])
        if p.subkind == "exception":
            return pick([f"When is {k} raised?", f"What is the {k} exception?"])
        return pick([f"What is {k}?", f"What does {k} hold?"])
    if p.kind == "setting":
        return pick([f"What does the {k} setting do?", f"What is {k} in PostgreSQL?", f"What does {k} control?"])
    if p.kind == "glossary":
        term = _lower_first(k)
        return pick([f"What is {term}?", f"What is {term}?", f"What does {term} mean?", f"Can you explain {term}?"])
    # a section heading
    words = k.split(" ", 1)
    low = words[0].lower()
    rest = words[1] if len(words) > 1 else ""
    if low == "how" and rest.lower().startswith("to "):
        return f"How do I {rest[3:]}?"
    if low in GERUNDS and rest:
        return f"How do I {GERUNDS[low]} {_lower_first(rest)}?"
    phrase = _lower_first(k)
    if p.subkind == "title" and not phrase.startswith(("the ", "The ")):
        return pick([f"What is {phrase}?" if not _plural(phrase) else f"What are {phrase}?", f"Can you explain {phrase}?", f"Tell me about {phrase} in {doc}."])
    if _plural(phrase):
        return pick([f"What are {phrase}?", f"What are {phrase}?", f"Can you explain {phrase}?"])
    return pick([f"What is {phrase}?", f"What is {phrase}?", f"Can you explain {phrase}?", f"Tell me about {phrase}."])


def passages_of(path: Path) -> list[Passage]:
    warnings.filterwarnings("ignore", category=XMLParsedAsHTMLWarning)
    soup = BeautifulSoup(path.read_text(encoding="utf-8", errors="replace"), "lxml")
    for junk in soup.select("script, style, div.sphinxsidebar, div.related, div.navheader, div.navfooter, div.footer, a.headerlink, nav"):
        junk.decompose()
    faq = "faq" in path.as_posix()
    return _glossary(soup) + _api(soup) + _pg_settings(soup) + _sections(soup, faq)


def conversations(source: dict) -> tuple[list[dict], int]:
    root = Path(source["root"])
    out, seen_q, seen_a, dropped = [], set(), set(), 0
    doc = source["name"].replace(" documentation", "").rsplit(" ", 1)[0]
    for path in sorted(root.rglob("*.html")):
        rel = path.relative_to(root).as_posix()
        if any(s in rel for s in source["skip"]):
            continue
        for p in passages_of(path):
            h = _hash(source["package"], rel, p.kind, p.key)
            q = question(p, doc, h)
            if q.lower() in seen_q or p.text in seen_a:
                continue
            if find_blocked(q) or find_blocked(p.text):
                dropped += 1
                continue
            seen_q.add(q.lower())
            seen_a.add(p.text)
            out.append({
                "source": f"{source['package']}:{rel}",
                "kind": p.kind,
                "split": "val" if (_hash(source["package"], rel) % 100) < VAL_PERCENT else "train",
                "system": SYSTEM_PROMPTS[(h >> 8) % len(SYSTEM_PROMPTS)],
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": p.text},
                ],
            })
    return out, dropped


def build(out_dir: Path, tool_conversations: int = TOOL_CONVERSATIONS, tool_heldout: int = TOOL_HELDOUT) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    stats: dict = {"sources": []}
    lengths: list[int] = []
    kinds: dict[str, int] = {}
    text: dict[str, list[dict]] = {"train": [], "val": []}
    files = {split: (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") for split in ("train", "val")}
    try:
        for source in SOURCES:
            if not Path(source["root"]).is_dir():
                raise SystemExit(f"{source['root']} is missing: apt-get install {source['package']}")
            convs, dropped = conversations(source)
            for c in convs:
                text[c["split"]].append(c)
                files[c["split"]].write(json.dumps(c, ensure_ascii=False) + "\n")
                lengths.append(len(c["messages"][-1]["content"]))
                kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
            chars = sum(len(m["content"]) for c in convs for m in c["messages"])
            stats["sources"].append({k: source[k] for k in ("name", "package", "licence")}
                                    | {"conversations": len(convs), "characters": chars, "dropped_blocked": dropped})
        # Tool-use conversations (tool_corpus), after the text: documentation questions asked with
        # tools offered come from the text's own splits; the held-out split is for evaluate --tools only.
        tools = tool_corpus.build(tool_conversations, tool_heldout, text["train"], text["val"])
        for c in tools["train"]:
            files["train"].write(json.dumps(c, ensure_ascii=False) + "\n")
        with (out_dir / "tools_heldout.jsonl").open("w", encoding="utf-8") as f:
            for c in tools["heldout"]:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        stats["tools"] = {split: {"conversations": len(convs), **{k: sum(c["kind"] == k for c in convs) for k in ("call", "text", "result", "echo")},
                                  "families": len({c["family"] for c in convs})}
                          for split, convs in tools.items()}
    finally:
        for f in files.values():
            f.close()
    q = statistics.quantiles(lengths, n=20)
    stats["answers"] = {"count": len(lengths), "kinds": kinds, "chars_median": statistics.median(lengths),
                        "chars_p5": q[0], "chars_p95": q[-1], "chars_max": max(lengths)}
    (out_dir / "sources.json").write_text(json.dumps(stats, indent=2))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    ap.add_argument("--tool-conversations", type=int, default=TOOL_CONVERSATIONS, help="tool-use conversations in train.jsonl")
    ap.add_argument("--tool-heldout", type=int, default=TOOL_HELDOUT, help="held-out tool conversations (tools_heldout.jsonl)")
    args = ap.parse_args()
    print(json.dumps(build(args.out, args.tool_conversations, args.tool_heldout), indent=2))


if __name__ == "__main__":
    main()
