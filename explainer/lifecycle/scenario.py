"""The request being explained, and its permalink codec.

A scenario is everything a stage page needs to show the same thing every time: the
request (system, messages, parameters), the seed of the draw, and cache breakpoints.
It travels in the URL as ``?s=<blob>``: compact JSON of the fields that differ from the
defaults, deflated, base64url-encoded, followed by its signature (itsdangerous, HMAC-SHA256) so
that an altered or truncated link is recognised and refused with a clear message instead of
showing something nobody sent. The codec is keyed with the server's secret and may be given
older secrets too (key rotation): a link signed with any of them still opens, new links are
signed with the current one.

Example:
    >>> codec = ScenarioCodec(b"key")
    >>> s = Scenario(messages=[{"role": "user", "content": "Hi"}], temperature=0.2)
    >>> codec.decode(codec.encode(s)) == s
    True
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NoReturn

from itsdangerous import Signer

from explainer.llm import jsonlimits

DEFAULT_PROMPT = "How does Apache Airflow schedule DAGs in production?"
DEFAULT_MODEL = "claude-sonnet-4-6"
MAX_BLOB_CHARS = 6000  # a link this long still works in every browser and server
MAX_JSON_BYTES = 64 * 1024  # what a blob may inflate to: no decompression bombs
SALT = b"explainer.scenario-link"
LEGACY_SIG_CHARS = 12  # the 0.1 release's links: a 9-byte HMAC, base64url, see ScenarioCodec._legacy_valid
MAX_FIELD_DEPTH = jsonlimits.MAX_JSON_DEPTH - 1  # a field sits one level down in the link's JSON object


class ScenarioError(ValueError):
    """A permalink that cannot be used; the message is safe to show to the user."""


def _default_messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": DEFAULT_PROMPT}]


@dataclass
class Scenario:
    system: str = ""
    messages: list[dict[str, Any]] = field(default_factory=_default_messages)
    tools: list[dict[str, Any]] = field(default_factory=list)
    model: str = DEFAULT_MODEL
    max_tokens: int = 48
    temperature: float = 0.7
    top_p: float | None = None
    top_k: int | None = None
    stop_sequences: list[str] = field(default_factory=list)
    stream: bool = True
    seed: int = 0
    weights: str = ""  # a local model's fingerprint: a link never silently shows another model's run

    def request_body(self) -> dict[str, Any]:
        """The Messages API body this scenario sends (fields at their API defaults are left out)."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens}
        if self.system:
            body["system"] = self.system
        body["messages"] = [dict(m) for m in self.messages]
        if self.tools:
            body["tools"] = self.tools
        if self.stop_sequences:
            body["stop_sequences"] = list(self.stop_sequences)
        body["temperature"] = self.temperature
        if self.top_p is not None:
            body["top_p"] = self.top_p
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.stream:
            body["stream"] = True
        return body

    def changes(self) -> dict[str, Any]:
        """Only the fields that differ from a fresh Scenario: what the permalink stores."""
        default = Scenario()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def replace(self, **changes: Any) -> Scenario:
        data = asdict(self)
        data.update(changes)
        return Scenario(**data)

    @classmethod
    def from_changes(cls, data: dict[str, Any]) -> Scenario:
        if not isinstance(data, dict):
            raise ScenarioError("This link does not describe a scenario.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ScenarioError(f"This link has a field this version does not know: {unknown[0]!r}.")
        s = cls(**data)
        s.validate()
        return s

    def validate(self) -> None:
        """Shape checks (the API's own rules are applied later by the payload validator)."""
        def bad(msg: str) -> NoReturn:
            raise ScenarioError(f"This link's scenario is not valid: {msg}.")

        for name in ("messages", "tools", "stop_sequences"):
            # Checked first and without recursion: everything after this (comparisons, asdict,
            # json.dumps, the payload validator, jsonschema) recurses once per level.
            try:
                jsonlimits.check_depth(getattr(self, name), MAX_FIELD_DEPTH)
            except jsonlimits.TooDeep:
                bad(f"{name} nest deeper than {MAX_FIELD_DEPTH} levels of lists and objects")
        if not isinstance(self.system, str):
            bad("system must be text")
        if not isinstance(self.messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), (str, list))
            for m in self.messages
        ):
            bad("messages must be a list of user and assistant turns")
        if not isinstance(self.tools, list):
            bad("tools must be a list")
        if not isinstance(self.model, str) or not self.model or len(self.model) > 100:
            bad("model must be a model name")
        if not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool) or not (1 <= self.max_tokens <= 4096):
            bad("max_tokens must be a whole number from 1 to 4096")
        if not isinstance(self.temperature, (int, float)) or isinstance(self.temperature, bool) or not (0 <= self.temperature <= 1):
            bad("temperature must be between 0 and 1")
        if self.top_p is not None and (not isinstance(self.top_p, (int, float)) or not (0 < self.top_p <= 1)):
            bad("top_p must be above 0 and at most 1")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0):
            bad("top_k must be a whole number, 0 or more")
        if not isinstance(self.stop_sequences, list) or not all(isinstance(x, str) for x in self.stop_sequences):
            bad("stop_sequences must be a list of text")
        if not isinstance(self.stream, bool):
            bad("stream must be true or false")
        if not isinstance(self.weights, str) or len(self.weights) > 64:
            bad("weights must be a model fingerprint")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not (0 <= self.seed < 2**32):
            bad("seed must be a whole number from 0 to 4294967295")

    def key(self) -> str:
        """A stable digest of the scenario (for caches of computed runs).

        ScenarioError (never RecursionError) for a scenario nested too deeply, even one built
        in code without :meth:`validate`.
        """
        data = {f.name: getattr(self, f.name) for f in fields(self)}  # what asdict gives, without its recursion
        try:
            jsonlimits.check_depth(data)
        except jsonlimits.TooDeep:
            raise ScenarioError(f"This scenario nests deeper than {jsonlimits.MAX_JSON_DEPTH} levels of lists and objects.") from None
        return hashlib.sha256(json.dumps(data, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()


class ScenarioCodec:
    """Scenario <-> URL-safe, signed, compressed text.

    ``secret`` signs new links; a link signed with it or with one of ``fallbacks`` (secrets being
    rotated out, as Django's ``SECRET_KEY_FALLBACKS``) opens.
    """

    def __init__(self, secret: str | bytes, fallbacks: Iterable[str | bytes] = ()):
        self.secrets = [_bytes(secret), *(_bytes(k) for k in fallbacks)]  # newest first
        # itsdangerous signs with the last key of its list and checks a signature against every one.
        self._signer = Signer(self.secrets[::-1], salt=SALT, key_derivation="hmac", digest_method=hashlib.sha256)

    def seal(self, payload: bytes) -> str:
        """The link text of a deflated payload: ``<payload>.<signature>``, base64url both."""
        return self._signer.sign(_b64(payload)).decode("ascii")

    def encode(self, scenario: Scenario) -> str:
        """"" for the default scenario; otherwise ``<payload>.<signature>``."""
        changes = scenario.changes()
        if not changes:
            return ""
        raw = json.dumps(changes, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        text = self.seal(zlib.compress(raw, 9))
        if len(text) > MAX_BLOB_CHARS:
            raise ScenarioError(f"This scenario is too large for a link ({len(text):,} characters; the limit is {MAX_BLOB_CHARS:,}). Shorten the prompt or the history.")
        return text

    def decode(self, text: str | None) -> Scenario:
        if not text:
            return Scenario()
        if len(text) > MAX_BLOB_CHARS:
            raise ScenarioError(f"This link is too long ({len(text):,} characters; the limit is {MAX_BLOB_CHARS:,}).")
        try:
            body, sig = text.split(".")
            payload, _ = _unb64(body), _unb64(sig)
        except (ValueError, binascii.Error):
            raise ScenarioError("This link is damaged: it may have been cut off when it was copied.") from None
        valid = self._legacy_valid(payload, sig) if len(sig) == LEGACY_SIG_CHARS else self._signer.validate(text)
        if not valid:
            raise ScenarioError("This link has been altered or was made by another server, so it is not shown.")
        try:
            d = zlib.decompressobj()
            raw = d.decompress(payload, MAX_JSON_BYTES)
            if d.unconsumed_tail:
                raise ScenarioError("This link's scenario is too large.")
            data = jsonlimits.loads(raw.decode("utf-8"))
        except jsonlimits.TooDeep:
            raise ScenarioError(f"This link's scenario nests deeper than {jsonlimits.MAX_JSON_DEPTH} levels of lists and objects.") from None
        except (zlib.error, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, ScenarioError):
                raise
            raise ScenarioError("This link is damaged and cannot be read.") from None
        try:
            return Scenario.from_changes(data)
        except TypeError:
            raise ScenarioError("This link does not describe a scenario.") from None

    def _legacy_valid(self, payload: bytes, sig: str) -> bool:
        """Whether ``sig`` is the signature the 0.1 release gave ``payload``: HMAC-SHA256, cut to 9 bytes, keyed
        with SHA-256 of the salt and the secret. Links already shared keep opening; no new link is made so."""
        for secret in self.secrets:
            key = hashlib.sha256(SALT + b":" + secret).digest()
            if hmac.compare_digest(_b64(hmac.new(key, payload, hashlib.sha256).digest()[:9]), sig):
                return True
        return False


def _bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def _unb64(s: str) -> bytes:
    if not s or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in s):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
