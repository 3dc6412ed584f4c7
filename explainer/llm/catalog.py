"""The models this server can serve: the bundled one, and Hugging Face-layout folders in a directory.

The directory (``EXPLAINER_MODELS_DIR``, ``var/models/`` by default) holds one folder per model;
the folder's name is the model's name everywhere (the API's ``model`` field, menus, permalinks).
``add`` checks that a folder opens before copying it in; ``pull`` downloads one with the hub's
own client first. Opening a folder is all or nothing: :func:`explainer.llm.hf.loader.load_folder`
checks every file before it builds anything. A folder is untrusted input: one holding a link is
refused (naming it), a folder of the directory that is itself a link, or resolves elsewhere, is
not a model, and ``add`` copies only regular files, without following a link, then checks the
copy (every file, and its chat template on a sample conversation) before installing it. The
models kept open are bounded in bytes (``max_bytes``), not only in number.

Example:
    >>> bundled().name, bundled().bundled
    ('tiny-explainer-4l', True)
"""
from __future__ import annotations

import ctypes
import fnmatch
import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from explainer.llm import budget
from explainer.llm.interface import LoadedModel, ModelBusy, ModelLoadError

if TYPE_CHECKING:  # the loader is imported when a folder is first read, not with the catalog
    from explainer.llm.hf.folder import ModelFolder

BUNDLED_NAME = "tiny-explainer-4l"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# What a model folder may hold that the app reads; everything else (PyTorch .bin files, ONNX, GGUF) is left behind.
FOLDER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                "special_tokens_map.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "LICENSE*", "LICENCE*", "README.md")
DEFAULT_MAX_BYTES = 6 << 30  # the open models' arrays, all together (the server passes EXPLAINER_MODELS_MB)
MAX_MODELS = 1_000  # folders of the models directory looked at
MAX_FILES = 10_000  # files of one folder looked at
T = TypeVar("T")
Seen = tuple[tuple[str, int, int, int], ...]  # a folder's files as (name, size, mtime, kind)


def _regular(path: Path) -> bool:
    """A regular file, not reached through a link (its last part)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:,.0f} MB"


def _copy(src: ModelFolder, file: str, dest: Path) -> None:
    """One file of a ModelFolder copied, read without following a link and written as a new file."""
    with src.open(file) as fin, open(dest, "xb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Hand memory freed by closed models and a load's temporary arrays back to the system.

    glibc keeps freed memory in its arenas (one per thread that allocated, and models are opened in
    whatever thread asks), and blocks a few MB in size, like a layer's matrices, are not returned on
    their own: cycling four 0.4 GB models through two open slots left 1.8 GB resident for 0.8 GB of
    models, and 0.9 GB after a trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


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
    """The models directory: list, open (kept open within a memory budget), add and pull.

    Open models are bounded in bytes: ``max_bytes`` (2 GB by default; the server passes its
    EXPLAINER_MODELS_MB) caps the float32 arrays of every model kept open, measured on each built
    model (its weights and tables), and ``keep`` caps their number. Opening one more first closes
    the least recently used models that no request is using; a model that alone is larger than the
    budget is refused before anything is read (its config's claim), and while the models in use
    leave no room, a new open waits up to ``wait_s`` seconds for one to be released, then is
    refused in a sentence. A model counts as in use between :meth:`using`'s enter and exit; one
    taken with plain :meth:`load` can be closed at any time, so its caller's own reference can
    keep its memory alive past the budget until that caller lets go (use :meth:`using` for work
    that lasts). Objects made from an open model (an engine) are kept with :meth:`attach` so they
    go when the model closes.
    """

    def __init__(self, root: Path, max_context: int = 2048, keep: int = 2, max_bytes: int = DEFAULT_MAX_BYTES,
                 wait_s: float = 30.0):
        self.root, self.max_context, self.keep = Path(root), max_context, keep
        self.max_bytes, self.wait_s = int(max_bytes), wait_s
        self._open: dict[str, LoadedModel] = {}  # most recently used last
        self._bytes: dict[str, int] = {}  # name -> bytes of an open model
        self._users: dict[str, int] = {}  # name -> requests using it now (never closed while above 0)
        self._extras: dict[str, dict[str, Any]] = {}  # name -> objects attached to the open model
        self._reserved = 0  # bytes claimed by opens in progress
        self._failed: dict[str, tuple[Seen, str]] = {}  # name -> (the folder's files as last seen, why it failed)
        self._lock = threading.Lock()  # guards the dicts only, never held through a load
        self._changed = threading.Condition(self._lock)  # a model closed or was released: room may have been made
        self._loading: dict[str, threading.Lock] = {}  # one per name: a second request for it waits for the first load

    # ---- reading ------------------------------------------------------------------------
    def names(self) -> list[str]:
        try:
            children = list(os.scandir(self.root))
        except OSError:
            return []
        # Real folders only: an entry of the models directory that is a link is not a model.
        return sorted(e.name for e in children[:MAX_MODELS] if usable_name(e.name) and e.is_dir(follow_symlinks=False)
                      and _regular(self.root / e.name / "config.json"))

    def entries(self) -> list[Entry]:
        from explainer.llm.hf.folder import ModelFolder
        from explainer.llm.hf.loader import describe_folder

        out = []
        for name in self.names():
            path = self.root / name
            failed = self._failed.get(name)
            if failed is not None and failed[0] == self._seen(name):
                out.append(Entry(name, path, failed[1], False))  # its config reads, but the folder did not open
                continue
            try:
                with ModelFolder(path, self.root) as folder:
                    out.append(Entry(name, path, describe_folder(folder, max_bytes=self.max_bytes), True))
            except ModelLoadError as exc:
                out.append(Entry(name, path, str(exc), False))
        return out

    def has(self, name: str) -> bool:
        if not usable_name(name):
            return False
        try:
            is_dir = stat.S_ISDIR(os.lstat(self.root / name).st_mode)
        except OSError:
            return False
        return is_dir and _regular(self.root / name / "config.json")

    def _seen(self, name: str) -> Seen:
        """The folder's files as (name, size, mtime), never through a link: a failure is remembered until one changes."""
        try:
            with os.scandir(self.root / name) as it:
                out: list[tuple[str, int, int, int]] = []
                for e in it:
                    if len(out) >= MAX_FILES:
                        break
                    st = e.stat(follow_symlinks=False)
                    out.append((e.name, st.st_size, st.st_mtime_ns, stat.S_IFMT(st.st_mode)))
            return tuple(sorted(out))
        except OSError:
            return ()

    def open_bytes(self) -> int:
        """Bytes of the models open now (what the budget counts, besides opens in progress)."""
        with self._lock:
            return sum(self._bytes.values())

    def load(self, name: str) -> LoadedModel:
        """The model in folder ``name``, opened once and kept (within ``max_bytes``, the ``keep`` most recently used).

        An open model is returned at once, even while another is loading; two requests for the same
        folder load it once; a folder that failed is not read again until its files change."""
        return self._load(name, hold=False)

    @contextmanager
    def using(self, name: str) -> Iterator[LoadedModel]:
        """The model in folder ``name``, counted as in use (never closed to make room) until the block ends."""
        loaded = self._load(name, hold=True)
        try:
            yield loaded
        finally:
            with self._lock:
                n = self._users.get(name, 0) - 1
                if n > 0:
                    self._users[name] = n
                else:
                    self._users.pop(name, None)
                self._changed.notify_all()

    def attach(self, loaded: LoadedModel, key: str, make: Callable[[LoadedModel], T]) -> T:
        """``make(loaded)``, made once per open model and kept with it (the runner's engine): it goes when the
        model is closed, so no cache elsewhere keeps a closed model's weights alive. For a model that is no
        longer open, a fresh one that is not kept."""
        with self._lock:
            have = self._extras.get(loaded.name, {}).get(key) if self._open.get(loaded.name) is loaded else None
        if have is not None:
            return cast(T, have)  # what ``make`` made for this key
        made = make(loaded)
        with self._lock:
            if self._open.get(loaded.name) is not loaded:
                return made
            return cast(T, self._extras.setdefault(loaded.name, {}).setdefault(key, made))

    def _load(self, name: str, hold: bool) -> LoadedModel:
        from explainer.llm.hf.loader import estimate_bytes, load_folder

        with self._lock:
            hit = self._take(name, hold)
            if hit is not None:
                return hit
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            with self._lock:
                hit = self._take(name, hold)
            if hit is not None:
                return hit
            budget.check()  # a request cancelled or past its deadline while it waited reads no folder
            if not self.has(name):
                raise ModelLoadError(f"No model named {name!r} is installed on this server.")
            seen = self._seen(name)
            failed = self._failed.get(name)
            if failed is not None and failed[0] == seen:
                raise ModelLoadError(failed[1])
            try:
                need = estimate_bytes(self.root / name, max_bytes=self.max_bytes, root=self.root)
            except ModelLoadError as exc:
                self._failed[name] = (seen, str(exc))
                raise
            self._reserve(name, need)
            try:
                hit = load_folder(self.root / name, name=name, max_context=self.max_context, max_bytes=self.max_bytes,
                                  root=self.root)
            except BaseException as exc:
                with self._lock:
                    self._reserved -= need
                    self._changed.notify_all()
                if isinstance(exc, ModelLoadError) and not getattr(exc, "transient", False):  # a timing refusal is tried again
                    self._failed[name] = (seen, str(exc))
                raise
            with self._lock:  # the reservation becomes the open model's bytes at once: no other open sees a gap
                self._reserved -= need
                self._failed.pop(name, None)
                self._open[name] = hit
                self._bytes[name] = int(hit.card.get("resident_bytes") or hit.card.get("memory_bytes") or need)
                if hold:
                    self._users[name] = self._users.get(name, 0) + 1
                self._make_room(0, keep=name)  # the model may hold a little more than its config's estimate
                self._changed.notify_all()
        _release_free_memory()  # the load's temporary arrays, and any model closed to make room
        return hit

    def _take(self, name: str, hold: bool) -> LoadedModel | None:
        """An open model, made the most recently used (and counted in use when ``hold``); the lock is held."""
        hit = self._open.pop(name, None)
        if hit is not None:
            self._open[name] = hit
            if hold:
                self._users[name] = self._users.get(name, 0) + 1
        return hit

    def _make_room(self, need: int, keep: str | None = None) -> int:
        """Close least recently used models no request is using until ``need`` more bytes fit and fewer than
        ``keep`` models are open (the lock is held); how many were closed."""
        closed = 0
        for name in list(self._open):
            over_bytes = sum(self._bytes.values()) + self._reserved + need > self.max_bytes
            over_count = len(self._open) + (1 if need else 0) > self.keep
            if not (over_bytes or over_count):
                break
            if name == keep or self._users.get(name):
                continue
            self._open.pop(name)
            self._bytes.pop(name, None)
            self._extras.pop(name, None)
            closed += 1
        return closed

    def _reserve(self, name: str, need: int) -> None:
        """Claim ``need`` bytes for an open in progress: room is made by closing unused models; while the models in
        use leave none, wait up to ``wait_s`` for one to be released, then refuse."""
        deadline = time.monotonic() + self.wait_s
        closed = 0
        with self._lock:
            while True:
                closed += self._make_room(need)
                held = sum(self._bytes.values()) + self._reserved
                if held + need <= self.max_bytes:
                    self._reserved += need
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelBusy(f"{name} cannot be opened now: it needs {_mb(need)}, and the models in use "
                                         f"hold {_mb(held)} of the {_mb(self.max_bytes)} this server keeps for local models; "
                                         "try again in a moment.")
                budget.check()  # a request that is cancelled or past its deadline stops waiting
                self._changed.wait(min(left, 0.25))
        if closed:
            _release_free_memory()

    # ---- changing -----------------------------------------------------------------------
    def add(self, source: Path, name: str | None = None) -> Entry:
        """Check that ``source`` opens, copy the files the app reads into the directory (never through a link),
        open the copy completely and render its chat template on a sample conversation, then install it.

        What is checked is the copy itself, so a folder that changes while it is being added cannot install
        files other than those checked."""
        from explainer.llm.hf.folder import ModelFolder
        from explainer.llm.hf.loader import check_chat_template, describe_folder, load_folder
        from explainer.llm.hf.weights import weight_files

        source = Path(source).expanduser().resolve()  # the operator's own path; links inside the folder are refused
        if not source.is_dir():
            raise ModelLoadError(f"{source} is not a folder.")
        name = check_name(name or name_for(source))
        target = self.root / name
        if target.exists() or target.is_symlink():
            raise ModelLoadError(f"A model named {name!r} is already installed ({target}); remove that folder first or choose --name.")
        with ModelFolder(source) as src:
            describe_folder(src, max_bytes=self.max_bytes)  # the config's claims, before anything is copied
            self.root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
            try:
                shards = {p.name for p in weight_files(src)}  # an index may name its shards anything.safetensors
                for file in src.names():
                    if (file in shards or any(fnmatch.fnmatchcase(file, p) for p in FOLDER_FILES)) and src.is_file(file):
                        _copy(src, file, staging / file)
                with ModelFolder(staging, label=src.name) as copy:
                    loaded = load_folder(copy, name=name, max_context=self.max_context, max_bytes=self.max_bytes)
                check_chat_template(loaded)
                del loaded
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return Entry(name, target, describe_folder(target, max_bytes=self.max_bytes), True)

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
