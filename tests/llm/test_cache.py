"""The on-disk response cache: policies, lazy opening, and its use by the client."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from promptopt.errors import ConfigError
from promptopt.llm import LLMRequest, LLMResponse, Message, ResponseCache, Usage, fake_llm
from promptopt.llm.cache import default_cache_dir

ANSWER = LLMResponse(text="4", usage=Usage(10, 1), model="m", raw_id="r1", cost_usd=0.5)


def test_default_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMPTOPT_CACHE_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    assert ResponseCache().directory == tmp_path / "x"
    monkeypatch.delenv("PROMPTOPT_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "promptopt" / "llm"


def test_nothing_touches_disk_before_first_use(cache_dir: Path) -> None:
    cache = ResponseCache()
    assert cache.directory == cache_dir
    assert not cache_dir.exists()
    assert cache.get("k") is None
    assert cache_dir.exists()
    cache.close()


def test_round_trip_marks_answer_cached(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    cache.set("k", ANSWER)
    got = cache.get("k")
    assert got is not None and got.cached
    assert (got.text, got.usage, got.model, got.raw_id) == ("4", Usage(10, 1), "m", "r1")
    cache.close()
    reopened = ResponseCache(tmp_path / "c")
    assert reopened.get("k") == got
    reopened.close()


@pytest.mark.parametrize(
    ("policy", "reads", "writes"),
    [
        ("off", False, False),
        ("read", True, False),
        ("readwrite", True, True),
        ("refresh", False, True),
    ],
)
def test_policies(tmp_path: Path, policy: str, reads: bool, writes: bool) -> None:
    seeded = ResponseCache(tmp_path / "c")
    seeded.set("old", ANSWER)
    seeded.close()
    cache = ResponseCache(tmp_path / "c", policy=policy)  # type: ignore[arg-type]
    assert (cache.get("old") is not None) is reads
    cache.set("new", ANSWER)
    cache.close()
    check = ResponseCache(tmp_path / "c")
    assert (check.get("new") is not None) is writes
    check.close()


def test_off_policy_never_opens_the_folder(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "never", policy="off")
    cache.set("k", ANSWER)
    assert cache.get("k") is None
    assert not (tmp_path / "never").exists()


def test_unknown_policy_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'sometimes'"):
        ResponseCache(policy="sometimes")  # type: ignore[arg-type]


def test_threads_share_one_cache(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")

    def work(i: int) -> None:
        cache.set(f"k{i}", LLMResponse(text=str(i)))
        got = cache.get(f"k{i}")
        assert got is not None and got.text == str(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(cache.get(f"k{i}") is not None for i in range(16))
    cache.close()


async def test_cache_hit_makes_no_backend_call(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c")
    llm = fake_llm(cache=cache)
    request = LLMRequest(messages=(Message("user", "same question"),))
    first = await llm.acomplete(request)
    second = await llm.acomplete(request)
    assert len(llm.backend.requests) == 1
    assert second.text == first.text == "same question"
    assert (first.cached, second.cached) == (False, True)
    assert (llm.stats.calls, llm.stats.cache_hits) == (1, 1)
    # Another client over the same folder answers from disk too.
    other = fake_llm(cache=ResponseCache(tmp_path / "c"))
    assert (await other.acomplete(request)).cached
    assert other.backend.requests == []
    cache.close()
    other.cache.close()


async def test_read_policy_does_not_store_and_refresh_does_not_read(tmp_path: Path) -> None:
    request = LLMRequest(messages=(Message("user", "q"),))
    reader = fake_llm(cache=ResponseCache(tmp_path / "c", policy="read"))
    await reader.acomplete(request)
    await reader.acomplete(request)
    assert len(reader.backend.requests) == 2
    refresher = fake_llm(cache=ResponseCache(tmp_path / "c", policy="refresh"))
    await refresher.acomplete(request)
    await refresher.acomplete(request)
    assert len(refresher.backend.requests) == 2
    assert (await reader.acomplete(request)).cached  # refresh wrote it
    reader.cache.close()
    refresher.cache.close()


async def test_failures_are_not_cached(tmp_path: Path) -> None:
    from promptopt.errors import BadRequestError
    from promptopt.llm import scripted_llm

    llm = scripted_llm(BadRequestError("nope"), "fine", cache=ResponseCache(tmp_path / "c"))
    request = LLMRequest(messages=(Message("user", "q"),))
    with pytest.raises(BadRequestError):
        await llm.acomplete(request)
    assert (await llm.acomplete(request)).text == "fine"
    assert (await llm.acomplete(request)).cached
    llm.cache.close()


async def test_key_depends_on_provider_model_and_backend_namespace() -> None:
    request = LLMRequest(messages=(Message("user", "q"),))
    a = fake_llm(model="a")
    b = fake_llm(model="b")
    assert a.key(request) != b.key(request)
    assert a.key(request) == fake_llm(model="a").key(request)
    assert a.key(request) == a.key(LLMRequest(messages=request.messages, model="a"))
    a.backend.cache_namespace = "http://127.0.0.1:1"  # type: ignore[attr-defined]
    assert a.key(request) != fake_llm(model="a").key(request)
