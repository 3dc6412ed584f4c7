"""One Messages API request body as code: curl, the Python SDK and the TypeScript SDK.

Each snippet sends exactly ``body``. Strings are written as escaped literals of their language;
characters that would not show on screen (bidirectional marks, zero-width and control characters,
lone surrogates) are written as escapes, so the code shows what it sends.

The current SDKs (``anthropic`` 2.x for Python, ``@anthropic-ai/sdk`` 1.x for TypeScript) have no
``temperature``, ``top_p`` or ``top_k`` parameters: the Python snippet sends them with
``extra_body``, the TypeScript one spreads them in from an untyped object. Both SDKs send the key
as ``Authorization: Bearer``; the curl command uses ``x-api-key``. The API accepts either.

Example:
    >>> print(curl({"model": "m", "max_tokens": 8, "messages": []}, "http://h").splitlines()[0])
    curl http://h/v1/messages \\
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
LEGACY_SAMPLING = ("temperature", "top_p", "top_k")
# Keyword arguments of the Python SDK's messages.create / messages.stream (anthropic 2.13).
PY_SDK_PARAMS = (
    "model", "max_tokens", "system", "messages", "tools", "tool_choice", "stop_sequences", "metadata",
    "cache_control", "service_tier", "thinking", "output_config", "container", "inference_geo",
)
WIDTH = 88
_IDENT = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")
_HIDDEN = ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")


def _hidden(ch: str) -> bool:
    return unicodedata.category(ch) in _HIDDEN


def _escape_hidden(text: str, astral: Callable[[int], str]) -> str:
    out = []
    for ch in text:
        if _hidden(ch) and ch not in "\n\t":
            cp = ord(ch)
            out.append(f"\\u{cp:04x}" if cp < 0x10000 else astral(cp))
        else:
            out.append(ch)
    return "".join(out)


def _utf16_pair(cp: int) -> str:
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def json_string(s: str) -> str:
    """A JSON (and JavaScript) string literal; invisible characters as ``\\uXXXX`` escapes."""
    return _escape_hidden(json.dumps(s, ensure_ascii=False), _utf16_pair)


def python_string(s: str) -> str:
    """A double-quoted Python string literal (JSON escapes are Python escapes, except above U+FFFF)."""
    return _escape_hidden(json.dumps(s, ensure_ascii=False), lambda cp: f"\\U{cp:08x}")


def json_text(value: Any) -> str:
    """Pretty JSON: short objects on one line, long ones one item per line; strings by :func:`json_string`."""
    return _literal(value, "json", 0)


# ---- literal printers: one line when it fits, else one item per line with a trailing comma ----

def _literal(value: Any, lang: str, indent: int) -> str:
    if isinstance(value, bool):
        return ("True" if value else "False") if lang == "py" else ("true" if value else "false")
    if value is None:
        return "None" if lang == "py" else "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else _literal(str(value), lang, indent)
    if isinstance(value, str):
        return python_string(value) if lang == "py" else json_string(value)
    if isinstance(value, Mapping):
        items = [f"{_key(k, lang)}: {_literal(v, lang, indent + _step(lang))}" for k, v in value.items()]
        return _wrap(items, "{", "}", lang, indent, pad=lang == "ts")
    if isinstance(value, (list, tuple)):
        items = [_literal(v, lang, indent + _step(lang)) for v in value]
        return _wrap(items, "[", "]", lang, indent, pad=False)
    return _literal(str(value), lang, indent)


def _step(lang: str) -> int:
    return 4 if lang == "py" else 2


def _key(k: str, lang: str) -> str:
    if lang == "ts" and _IDENT.match(k):
        return k
    return python_string(k) if lang == "py" else json_string(k)


def _wrap(items: list[str], open_: str, close: str, lang: str, indent: int, pad: bool) -> str:
    if not items:
        return open_ + close
    sp = " " if pad else ""
    one = f"{open_}{sp}{', '.join(items)}{sp}{close}"
    if "\n" not in one and indent + len(one) <= WIDTH:
        return one
    inner = " " * (indent + _step(lang))
    if lang == "json":  # JSON has no trailing commas
        return open_ + "\n" + ",\n".join(inner + item for item in items) + "\n" + " " * indent + close
    return open_ + "\n" + "".join(f"{inner}{item},\n" for item in items) + " " * indent + close


# ---- the three snippets ---------------------------------------------------------------------

def curl(body: dict[str, Any], base_url: str = DEFAULT_BASE_URL) -> str:
    """The request as a curl command (key from ``$ANTHROPIC_API_KEY``, sent as ``x-api-key``)."""
    data = json_text(body).replace("'", "'\\''")  # inside '...' only ' itself needs care
    flags = "  --no-buffer \\\n" if body.get("stream") else ""
    return (
        f"curl {base_url}/v1/messages \\\n"
        f"{flags}"
        '  -H "x-api-key: $ANTHROPIC_API_KEY" \\\n'
        '  -H "anthropic-version: 2023-06-01" \\\n'
        '  -H "content-type: application/json" \\\n'
        f"  -d '{data}'\n"
    )


def python_sdk(body: dict[str, Any], base_url: str = DEFAULT_BASE_URL) -> str:
    """The request with the official Python SDK (``pip install anthropic``)."""
    lines = []
    for name in PY_SDK_PARAMS:
        if name in body:
            lines.append(f"    {name}={_literal(body[name], 'py', 4)},")
    extra = {k: v for k, v in body.items() if k not in PY_SDK_PARAMS and k != "stream"}
    if extra:
        if set(extra) & set(LEGACY_SAMPLING):
            lines.append("    # temperature, top_p and top_k are not parameters of the current SDK:")
            lines.append("    # extra_body adds them to the JSON body as they are.")
        lines.append(f"    extra_body={_literal(extra, 'py', 4)},")
    args = "\n".join(lines)
    head = (
        "import os\n\n"
        "import anthropic\n\n"
        "client = anthropic.Anthropic(\n"
        '    api_key=os.environ["ANTHROPIC_API_KEY"],  # sent as "Authorization: Bearer <key>"\n'
        f"    base_url={python_string(base_url)},  # this server; leave it out to call the public API\n"
        ")\n\n"
    )
    if body.get("stream"):
        return head + (
            "with client.messages.stream(\n"
            f"{args}\n"
            ") as stream:\n"
            "    for text in stream.text_stream:\n"
            '        print(text, end="", flush=True)\n'
            "    message = stream.get_final_message()\n\n"
            "print()\n"
            "print(message.stop_reason, message.usage)\n"
        )
    return head + (
        "message = client.messages.create(\n"
        f"{args}\n"
        ")\n\n"
        "print(message.content[0].text)\n"
        "print(message.stop_reason, message.usage)\n"
    )


def typescript_sdk(body: dict[str, Any], base_url: str = DEFAULT_BASE_URL) -> str:
    """The request with the official TypeScript SDK (``npm install @anthropic-ai/sdk``)."""
    legacy = {k: body[k] for k in LEGACY_SAMPLING if k in body}
    lines = [f"  {_key(k, 'ts')}: {_literal(v, 'ts', 2)}," for k, v in body.items() if k != "stream" and k not in legacy]
    pre = ""
    if legacy:
        # Not in the SDK's types: spread in from an untyped object, which TypeScript does not check.
        pre = ("// temperature, top_p and top_k are not in the SDK's types: spread them in untyped,\n"
               "// and the SDK sends them in the JSON body as they are.\n"
               f"const legacy: Record<string, unknown> = {_literal(legacy, 'ts', 0)};\n\n")
        lines.append("  ...legacy,")
    args = "\n".join(lines)
    head = (
        'import Anthropic from "@anthropic-ai/sdk";\n\n'
        "const client = new Anthropic({\n"
        '  apiKey: process.env.ANTHROPIC_API_KEY, // sent as "Authorization: Bearer <key>"\n'
        f"  baseURL: {json_string(base_url)}, // this server; leave it out to call the public API\n"
        "});\n\n"
    ) + pre
    if body.get("stream"):
        return head + (
            "const stream = client.messages.stream({\n"
            f"{args}\n"
            "});\n"
            'stream.on("text", (text) => process.stdout.write(text));\n'
            "const message = await stream.finalMessage();\n"
            "console.log(message.stop_reason, message.usage);\n"
        )
    return head + (
        "const message = await client.messages.create({\n"
        f"{args}\n"
        "});\n"
        "console.log(message.content, message.stop_reason, message.usage);\n"
    )


def snippets(body: dict[str, Any], base_url: str = DEFAULT_BASE_URL) -> dict[str, str]:
    return {"curl": curl(body, base_url), "python": python_sdk(body, base_url), "typescript": typescript_sdk(body, base_url)}
