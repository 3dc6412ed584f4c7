"""The models this server can serve: the bundled one, and Hugging Face-layout folders in a directory.

The directory (``EXPLAINER_MODELS_DIR``, ``var/models/`` by default) holds one folder per model;
the folder's name is the model's name everywhere (the API's ``model`` field, menus, permalinks).
``add`` checks that a folder opens before copying it in; ``pull`` downloads one with the hub's
own client first. Opening a folder is all or nothing: :func:`explainer.llm.hf.loader.load_folder`
checks every file before it builds anything.

Example:
    >>> bundled().name, bundled().bundled
    ('tiny-explainer-4l', True)
"""
from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from explainer.llm.interface import LoadedModel, ModelLoadError

BUNDLED_NAME = "tiny-explainer-4l"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# What a model folder may hold that the app reads; everything else (PyTorch .bin files, ONNX, GGUF) is left behind.
FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                "special_tokens_map.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "LICENSE*", "LICENCE*", "README.md")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


@lru_cache(maxsize=1)
def bundled() -> LoadedModel:
    """The model trained for this app: tiny, instant, always there."""
    from explainer.llm.model import WEIGHTS_PATH, load_model
    from explainer.llm.tokenizer import load_tokenizer

    model = load_model()
    c = model.config
    card = {"architecture": "GPT-2 style (trained for this app)", "parameters": model.n_params, "layers": c.n_layer,
            "heads": c.n_head, "kv_heads": c.n_head, "d_model": c.d_model, "d_ff": c.d_ff, "vocabulary": c.vocab_size,
            "context": c.n_ctx, "model_context": c.n_ctx, "licence": "MIT (this project)",
            "memory_bytes": model.n_params * 4, "has_chat_template": True, "dtype": "float16 on disk, float32 in memory"}
    return LoadedModel(BUNDLED_NAME, model, load_tokenizer(), _file_hash(WEIGHTS_PATH), bundled=True, card=card)


def usable_name(name: str) -> bool:
    """A name a local model may have: the pattern, and not one the bundled model answers."""
    return bool(NAME_RE.fullmatch(name)) and not name.startswith("claude-") and name != BUNDLED_NAME


def check_name(name: str) -> str:
    """A model name the API, menus and links can carry; ModelLoadError otherwise."""
    if not NAME_RE.fullmatch(name):
        raise ModelLoadError(f"{name!r} is not a usable model name: use lower-case letters, digits, '.', '_' and '-' (at most 64).")
    if name.startswith("claude-") or name == BUNDLED_NAME:
        raise ModelLoadError(f"{name!r} is reserved: names starting with 'claude-' and {BUNDLED_NAME!r} are answered by the bundled model.")
    return name


def name_for(path: Path) -> str:
    """The name a folder gets by default: its own name in lower case, other characters as '-'."""
    return re.sub(r"[^a-z0-9._-]+", "-", path.name.lower()).strip("-.")[:64] or "model"


@dataclass(frozen=True)
class Entry:
    """One folder of the models directory, as ``models list`` shows it (read without loading weights)."""

    name: str
    path: Path
    summary: str  # "llama · 134.5M parameters · 30 layers" or why it cannot be opened
    ok: bool


class Catalog:
    """The models directory: list, open (kept open, a few at a time), add and pull."""

    def __init__(self, root: Path, max_context: int = 2048, keep: int = 2):
        self.root, self.max_context, self.keep = Path(root), max_context, keep
        self._open: dict[str, LoadedModel] = {}  # most recently used last
        self._failed: dict[str, tuple[tuple, str]] = {}  # name -> (the folder's files as last seen, why it failed)
        self._lock = threading.Lock()  # guards the dicts only, never held through a load
        self._loading: dict[str, threading.Lock] = {}  # one per name: a second request for it waits for the first load

    # ---- reading ------------------------------------------------------------------------
    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and usable_name(p.name) and (p / "config.json").is_file())

    def entries(self) -> list[Entry]:
        from explainer.llm.hf.loader import describe_folder

        out = []
        for name in self.names():
            path = self.root / name
            failed = self._failed.get(name)
            if failed is not None and failed[0] == self._seen(name):
                out.append(Entry(name, path, failed[1], False))  # its config reads, but the folder did not open
                continue
            try:
                out.append(Entry(name, path, describe_folder(path), True))
            except ModelLoadError as exc:
                out.append(Entry(name, path, str(exc), False))
        return out

    def has(self, name: str) -> bool:
        return usable_name(name) and (self.root / name / "config.json").is_file()

    def _seen(self, name: str) -> tuple:
        """The folder's files as (name, size, mtime): a failure is remembered until one of them changes."""
        try:
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in (self.root / name).iterdir()))
        except OSError:
            return ()

    def load(self, name: str) -> LoadedModel:
        """The model in folder ``name``, opened once and kept (the ``keep`` most recently used).

        An open model is returned at once, even while another is loading; two requests for the same
        folder load it once; a folder that failed is not read again until its files change."""
        from explainer.llm.hf.loader import load_folder

        with self._lock:
            hit = self._open.pop(name, None)
            if hit is not None:
                self._open[name] = hit
                return hit
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            with self._lock:
                hit = self._open.get(name)
            if hit is not None:
                return hit
            if not self.has(name):
                raise ModelLoadError(f"No model named {name!r} is installed on this server.")
            seen = self._seen(name)
            failed = self._failed.get(name)
            if failed is not None and failed[0] == seen:
                raise ModelLoadError(failed[1])
            try:
                hit = load_folder(self.root / name, name=name, max_context=self.max_context)
            except ModelLoadError as exc:
                self._failed[name] = (seen, str(exc))
                raise
            with self._lock:
                self._failed.pop(name, None)
                while len(self._open) >= self.keep:
                    self._open.pop(next(iter(self._open)))
                self._open[name] = hit
            return hit

    # ---- changing -----------------------------------------------------------------------
    def add(self, source: Path, name: str | None = None) -> Entry:
        """Check that ``source`` opens, then copy the files the app reads into the directory."""
        from explainer.llm.hf.loader import describe_folder, load_folder

        source = Path(source).expanduser().resolve()
        if not source.is_dir():
            raise ModelLoadError(f"{source} is not a folder.")
        name = check_name(name or name_for(source))
        target = self.root / name
        if target.exists():
            raise ModelLoadError(f"A model named {name!r} is already installed ({target}); remove that folder first or choose --name.")
        load_folder(source, name=name, max_context=self.max_context)  # all or nothing, before anything is copied
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            for pattern in FOLDER_FILES:
                for f in source.glob(pattern):
                    if f.is_file():
                        shutil.copy2(f, staging / f.name)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return Entry(name, target, describe_folder(target), True)

    def pull(self, repo_id: str, name: str | None = None, revision: str | None = None) -> Entry:
        """Download ``repo_id`` from the Hugging Face Hub (its own client, its cache rules), then :meth:`add` it."""
        try:
            from huggingface_hub import snapshot_download
            from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
        except ImportError as exc:  # pragma: no cover - a dependency of the app
            raise ModelLoadError(f"huggingface_hub is not installed: {exc}") from None
        if not re.match(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", repo_id):
            raise ModelLoadError(f"{repo_id!r} is not a Hub model id (owner/name, for example HuggingFaceTB/SmolLM2-135M-Instruct).")
        with tempfile.TemporaryDirectory(prefix="pull-") as tmp:
            try:
                folder = snapshot_download(repo_id, revision=revision, local_dir=tmp, allow_patterns=list(FOLDER_FILES))
            except (RepositoryNotFoundError, LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ModelLoadError(f"Could not download {repo_id} from the Hugging Face Hub: {first}") from None
            return self.add(Path(folder), name or name_for(Path(repo_id)))
