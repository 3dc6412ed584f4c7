"""A model folder is untrusted input: only its own regular files are read, never through a link.

A folder comes from anywhere (a download, an archive, a copy into the models directory), and a
symbolic link in it would make the app read, copy or show a file from elsewhere on the disk
(``LICENSE -> ../../var/secret.key``). So a folder is opened once, as a directory descriptor,
without following a link; it is refused if it holds a link at all (each named); and every file
is then opened relative to that descriptor with ``O_NOFOLLOW`` and checked to be a regular file,
so a name swapped for a link between the check and the read still fails instead of being
followed. A FIFO or device named like a model file is refused without blocking on it.

Sizes are checked from the open file's own ``fstat`` before it is read: no file is read whole
beyond the limit its reader states.

Example:
    >>> with ModelFolder("tests/fixtures/models/tiny-llama") as f:
    ...     f.is_file("config.json"), f.is_file("model.safetensors.index.json"), len(f.read_bytes("config.json", 1 << 20)) > 0
    (True, False, True)
"""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from explainer.llm.interface import ModelLoadError

MAX_ENTRIES = 10_000  # a real model folder holds a few dozen files
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO must not wait for a writer
_DIR_FD = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd


def _plain(name: str) -> bool:
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..") and os.sep not in name


class ModelFolder:
    """One model folder, opened once; every file read through it is the folder's own regular file.

    ``root``, when given, is the models directory the folder must sit in (by its real path): a
    folder name in the models directory that is a link, or resolves elsewhere, is refused.
    Refusals are :class:`ModelLoadError` sentences naming the folder and the file.
    """

    def __init__(self, path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, label: str | None = None):
        """``label`` is the name sentences give the folder (the source's name for a copy being checked)."""
        self.path = Path(path)
        self.name = label or self.path.name or str(self.path)
        try:
            info = os.lstat(self.path)
        except OSError as e:
            raise ModelLoadError(f"{self.name} cannot be read ({e.strerror or type(e).__name__}).") from None
        if stat.S_ISLNK(info.st_mode):
            raise ModelLoadError(f"{self.name} is a symbolic link; a model folder must be a real folder, not a link to one.")
        if not stat.S_ISDIR(info.st_mode):
            raise ModelLoadError(f"{self.path} is not a folder.")
        if root is not None:
            try:
                inside = self.path.resolve(strict=True).parent == Path(root).resolve(strict=True)
            except (OSError, RuntimeError):
                inside = False
            if not inside:
                raise ModelLoadError(f"{self.name} is not a folder of the models directory (its real path is elsewhere).")
        try:
            self.fd = os.open(self.path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        except OSError as e:
            raise ModelLoadError(f"{self.name} cannot be opened as a folder ({e.strerror or type(e).__name__}).") from None
        try:
            now = os.fstat(self.fd)
            if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev):  # swapped between the look and the open
                raise ModelLoadError(f"{self.name} changed while it was being opened; try again.")
            self._entries = self._list()
            links = sorted(n for n, is_link in self._entries.items() if is_link)
            if links:
                raise ModelLoadError(f"{self.name}/{links[0]} is a symbolic link; model folders may not contain links "
                                     f"(found: {', '.join(links[:10])}{', …' if len(links) > 10 else ''}); "
                                     "copy the folder with its links resolved (cp -rL) and add the copy.")
        except BaseException:
            self.close()
            raise

    # ---- the folder ---------------------------------------------------------------------
    def _list(self) -> dict[str, bool]:
        """Each entry's name and whether it is a link (read from the descriptor, never through a link)."""
        out: dict[str, bool] = {}
        try:
            with os.scandir(self.fd if os.scandir in os.supports_fd else self.path) as it:
                for entry in it:
                    if len(out) >= MAX_ENTRIES:
                        raise ModelLoadError(f"{self.name} holds more than {MAX_ENTRIES:,} files; a model folder holds a few dozen.")
                    out[entry.name] = entry.is_symlink()
        except OSError as e:
            raise ModelLoadError(f"{self.name} cannot be listed ({e.strerror or type(e).__name__}).") from None
        return out

    def names(self) -> list[str]:
        """The folder's entries (files and subfolders; links were refused when it was opened), sorted."""
        return sorted(self._entries)

    def close(self) -> None:
        fd, self.fd = getattr(self, "fd", -1), -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> ModelFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def label(self, name: str) -> str:
        """How a sentence names one of the folder's files: ``my-model/LICENSE``."""
        return f"{self.name}/{name}"

    # ---- its files ----------------------------------------------------------------------
    def _lstat(self, name: str) -> os.stat_result | None:
        if not _plain(name):
            return None
        try:
            if _DIR_FD:
                return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            return os.lstat(self.path / name)
        except OSError:
            return None

    def exists(self, name: str) -> bool:
        """Is there an entry ``name`` in the folder now, of any kind (a link included)?"""
        return self._lstat(name) is not None

    def is_file(self, name: str) -> bool:
        """Is ``name`` a regular file of this folder (not a link, not a FIFO, not a folder)?"""
        info = self._lstat(name)
        return info is not None and stat.S_ISREG(info.st_mode)

    def open(self, name: str) -> BinaryIO:
        """``name`` opened for reading: a regular file of this folder, never reached through a link."""
        if not _plain(name):
            raise ModelLoadError(f"{name!r} is not a file name of the folder {self.name}.")
        flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC | _NONBLOCK
        try:
            fd = os.open(name, flags, dir_fd=self.fd) if _DIR_FD else os.open(self.path / name, flags)
        except FileNotFoundError:
            raise ModelLoadError(f"{self.label(name)} is missing.") from None
        except OSError as e:
            info = self._lstat(name)
            if info is not None and stat.S_ISLNK(info.st_mode):
                raise ModelLoadError(f"{self.label(name)} is a symbolic link; model folders may not contain links "
                                     f"(found: {name}).") from None
            raise ModelLoadError(f"{self.label(name)} cannot be read ({e.strerror or type(e).__name__}).") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ModelLoadError(f"{self.label(name)} is not a regular file.")
            if _NONBLOCK:
                os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def read_bytes(self, name: str, limit: int) -> bytes:
        """The whole of ``name``, refused in a sentence if it is larger than ``limit`` bytes."""
        with self.open(name) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise ModelLoadError(f"{self.label(name)} is {size:,} bytes; at most {limit:,} are read from this file.")
            data = f.read(limit + 1)
        if len(data) > limit:  # it grew while being read
            raise ModelLoadError(f"{self.label(name)} is more than {limit:,} bytes; at most {limit:,} are read from this file.")
        return data

    def read_text(self, name: str, limit: int) -> str:
        try:
            return self.read_bytes(name, limit).decode("utf-8")
        except UnicodeDecodeError:
            raise ModelLoadError(f"{self.label(name)} is not UTF-8 text.") from None

    def head(self, name: str, n: int) -> bytes:
        """The first ``n`` bytes of ``name`` (a licence is stated at the top, and the file may be huge)."""
        with self.open(name) as f:
            return f.read(n)


def fd_path(f: BinaryIO, fallback: Path) -> str:
    """A path that opens the very file ``f`` holds, for a library that takes a path (safetensors): Linux's
    ``/proc/self/fd/N`` names the open file itself, so a name swapped since ``f`` was opened does not matter."""
    proc = f"/proc/self/fd/{f.fileno()}"
    return proc if os.path.exists(proc) else str(fallback)


@contextmanager
def opened(folder: str | os.PathLike[str] | ModelFolder, root: str | os.PathLike[str] | None = None) -> Iterator[ModelFolder]:
    """``folder`` as a :class:`ModelFolder`: the one given, or one opened (and closed) here for a path."""
    if isinstance(folder, ModelFolder):
        yield folder
        return
    with ModelFolder(folder, root) as f:
        yield f
