"""Pre-flight checks: key variables are set and endpoints answer, before a run spends anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import web
from small_task import write_small_task

import promptopt
from promptopt import preflight as preflight_module
from promptopt.errors import ModelUnusableError, TaskFileError
from promptopt.llm.fakes import FakeBackend
from promptopt.llm.models import ModelConfig
from promptopt.preflight import check_keys, named_models, preflight
from promptopt.store import RunStore, list_runs
from promptopt.task.loader import load_task
from promptopt.testing.llamacpp import free_port
from promptopt.testing.openai_server import OpenAITestServer

SECRET = "sk-preflight-very-secret-0123456789"


@pytest.fixture
def write_task(tmp_path: Path):
    return lambda models: write_small_task(tmp_path, models)


class _CountingProbe:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.urls: list[tuple[str, ...]] = []
        original = preflight_module.probe_model

        async def probe(config: ModelConfig, *, timeout: float) -> None:
            self.urls.append(config.endpoints)
            await original(config, timeout=timeout)

        monkeypatch.setattr(preflight_module, "probe_model", probe)


# -- keys -----------------------------------------------------------------------------------


def test_a_provider_endpoint_without_its_key_names_model_endpoint_variable_and_file(write_task):
    path = write_task('  task: "openai:gpt-4o-mini"')
    with pytest.raises(TaskFileError) as caught:
        check_keys(named_models(load_task(path)), task_file=str(path))
    assert str(caught.value) == (
        f"{path}: models.task: model 'openai:gpt-4o-mini' at 'https://api.openai.com/v1' "
        "needs an API key, but the environment variable 'OPENAI_API_KEY' is not set"
    )


def test_a_named_key_variable_must_be_set_even_for_a_base_url(write_task, monkeypatch):
    path = write_task(
        "  task: {model: 'openai:m', base_url: 'http://127.0.0.1:9/v1', api_key_env: PO_KEY}"
    )
    spec = load_task(path)
    with pytest.raises(TaskFileError, match=r"models\.task\.api_key_env: .*'PO_KEY' is not set"):
        check_keys(named_models(spec), task_file=str(path))
    monkeypatch.setenv("PO_KEY", "")
    with pytest.raises(TaskFileError, match="'PO_KEY' is not set"):
        check_keys(named_models(spec), task_file=str(path))
    monkeypatch.setenv("PO_KEY", "set")
    check_keys(named_models(spec), task_file=str(path))


def test_a_local_server_without_a_named_key_needs_none(write_task):
    path = write_task("  task: {model: 'openai:m', base_url: 'http://127.0.0.1:9/v1'}")
    check_keys(named_models(load_task(path)), task_file=str(path))


def test_each_model_is_checked_once_under_the_role_that_names_it(write_task, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "set")
    path = write_task('  task: "openai:gpt-4o-mini"\n  optimizer: "anthropic:claude-x"')
    models = named_models(load_task(path))
    assert {role: m.model for role, m in models.items()} == {
        "task": "openai:gpt-4o-mini",
        "optimizer": "anthropic:claude-x",
    }  # the judge defaults to the optimizer's model: not a second check
    with pytest.raises(TaskFileError, match=r"models\.optimizer: .*'ANTHROPIC_API_KEY'"):
        check_keys(models, task_file=str(path))


def test_roles_with_a_supplied_backend_are_not_checked(write_task):
    spec = load_task(write_task('  task: "openai:gpt-4o-mini"'))
    assert named_models(spec, skip={"task", "optimizer", "judge"}) == {}


# -- probes ---------------------------------------------------------------------------------


async def test_in_process_models_are_never_probed(write_task, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("an in-process model was probed")

    monkeypatch.setattr(preflight_module, "probe_model", no_probe)
    spec = load_task(write_task('  task: "fake:positive"\n  optimizer: "local:smollm2"'))
    await preflight(spec)


async def test_one_probe_per_endpoint_and_none_spends_a_completion(write_task, monkeypatch):
    probes = _CountingProbe(monkeypatch)
    async with OpenAITestServer() as server:
        spec = load_task(
            write_task(
                f"  task: {{model: 'openai:a', base_url: '{server.base_url}'}}\n"
                f"  optimizer: {{model: 'openai:b', base_url: '{server.base_url}'}}"
            )
        )
        await preflight(spec)
    assert probes.urls == [(server.base_url,)]
    assert server.stats.received == 0


async def test_an_unreachable_endpoint_fails_naming_model_endpoint_and_cause(write_task):
    url = f"http://127.0.0.1:{free_port()}/v1"
    spec = load_task(write_task(f"  task: {{model: 'openai:m', base_url: '{url}'}}"))
    with pytest.raises(ModelUnusableError) as caught:
        await preflight(spec)
    text = str(caught.value)
    assert text.startswith(f"model 'openai:m' at '{url}' cannot be used: cannot connect")
    assert "--no-probe" in text
    await preflight(spec, probe=False)  # the keys are fine; the probe is skipped


async def test_a_refused_key_fails_without_showing_the_key(write_task, monkeypatch):
    monkeypatch.setenv("PO_KEY", SECRET)
    async with OpenAITestServer(api_key="the-right-one") as server:
        spec = load_task(
            write_task(
                f"  task: {{model: 'openai:m', base_url: '{server.base_url}', api_key_env: PO_KEY}}"
            )
        )
        with pytest.raises(ModelUnusableError, match="the API key was refused") as caught:
            await preflight(spec)
    assert SECRET not in str(caught.value)


class _NoModelList(OpenAITestServer):
    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/chat/completions", self._chat)]


async def test_a_server_without_a_model_list_passes(write_task):
    async with _NoModelList() as server:
        spec = load_task(
            write_task(f"  task: {{model: 'openai:m', base_url: '{server.base_url}'}}")
        )
        await preflight(spec)


# -- through the API ------------------------------------------------------------------------


def test_a_failed_preflight_creates_no_run(write_task, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    path = write_task(f"  task: {{model: 'openai:m', base_url: '{url}'}}")
    with pytest.raises(ModelUnusableError):
        promptopt.optimize(path, output=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


def test_a_supplied_backend_skips_the_checks(write_task, tmp_path):
    path = write_task('  task: "openai:gpt-4o-mini"')  # no key: only a fake will answer
    fake = FakeBackend(model="positive")
    backends = {"task": fake, "optimizer": fake, "judge": fake}
    result = promptopt.optimize(path, output=tmp_path / "runs", backends=backends)
    assert result.scores["seed_val"] is not None


def test_without_the_probe_a_refused_key_ends_the_run_and_the_store_keeps_it(
    write_task, tmp_path, monkeypatch
):
    monkeypatch.setenv("PO_KEY", SECRET)
    with OpenAITestServer(api_key="the-right-one") as server:
        path = write_task(
            f"  task: {{model: 'openai:m', base_url: '{server.base_url}', api_key_env: PO_KEY}}"
        )
        with pytest.raises(ModelUnusableError) as caught:
            promptopt.optimize(path, output=tmp_path / "runs", probe=False)
    assert str(caught.value).startswith(
        f"model 'openai:m' at '{server.base_url}' cannot be used: the API key was refused"
    )
    (run,) = list_runs(tmp_path / "runs")
    store = RunStore.open(run.run_id, output_dir=tmp_path / "runs")
    assert store.status() == "failed"
    calls = store.llm_calls()
    assert calls and all("HTTP 401" in c["error"] for c in calls)
    assert server.stats.received <= 2  # the requests in flight (concurrency 2), then no more
    store.close()


def test_eval_checks_too_and_its_flag_skips_the_probe(write_task, tmp_path, capsys, monkeypatch):
    from promptopt.cli import main

    monkeypatch.setenv("PO_KEY", "wrong")
    runs = str(tmp_path / "runs")
    with OpenAITestServer(api_key="right") as server:
        path = str(
            write_task(
                f"  task: {{model: 'openai:m', base_url: '{server.base_url}', api_key_env: PO_KEY}}"
            )
        )
        assert main(["eval", path, "--output", runs]) == 1
        probed = capsys.readouterr().err
        assert not (tmp_path / "runs").exists()
        assert main(["eval", path, "--output", runs, "--no-probe"]) == 1
        scored = capsys.readouterr().err
    for err in (probed, scored):
        assert err.startswith(f"promptopt: error: model 'openai:m' at '{server.base_url}' ")
        assert "the API key was refused" in err and len(err.splitlines()) == 1
    assert "pre-flight probe" in probed and "pre-flight probe" not in scored
    assert server.stats.received >= 1  # the scoring sent requests; the probe sent none
