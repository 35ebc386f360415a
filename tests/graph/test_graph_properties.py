"""Property tests: generated DAG workflows get exactly their edges, under asyncio and threads,
and a trace round-trips through its dict form and the run store unchanged."""

from __future__ import annotations

import asyncio
import random
import threading

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptopt.graph import Trace, node, param, trace
from promptopt.graph.export import to_networkx
from promptopt.store import RunStore


@node
def combine(*inputs, tag):
    return f"n{tag}:" + str(sum(len(i) for i in inputs))


@node
async def acombine(*inputs, tag):
    await asyncio.sleep(0)
    return f"a{tag}:" + str(sum(len(i) for i in inputs))


# a workflow: how many params, then for each op the positions (params first, then ops) it reads
workflows = st.integers(min_value=0, max_value=3).flatmap(
    lambda n_params: st.tuples(
        st.just(n_params),
        st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=8).map(
            lambda seeds: [
                sorted(random.Random(seed).sample(range(n_params + i), min(n_params + i, seed % 3)))
                for i, seed in enumerate(seeds)
            ]
        ),
    )
)


def _expected(n_params: int, reads: list[list[int]]) -> list[tuple[int, ...]]:
    return [() for _ in range(n_params)] + [tuple(r) for r in reads]


def _run(n_params: int, reads: list[list[int]], *, salt: str = "") -> tuple[Trace, list[str]]:
    params = [param(f"value {k}{salt}", name=f"p{k}") for k in range(n_params)]
    with trace(name="wf", meta={"salt": salt}) as t:
        values = [p.value for p in params]
        for i, inputs in enumerate(reads):
            values.append(combine(*[values[j] for j in inputs], tag=i))
    return t, values


async def _arun(n_params: int, reads: list[list[int]], *, salt: str) -> Trace:
    params = [param(f"value {k}{salt}", name=f"p{k}") for k in range(n_params)]
    async with trace(name=salt) as t:
        values = [p.value for p in params]
        for i, inputs in enumerate(reads):
            values.append(await acombine(*[values[j] for j in inputs], tag=i))
    return t


@settings(max_examples=60, deadline=None)
@given(workflows)
def test_edges_are_exactly_the_data_dependencies(workflow):
    n_params, reads = workflow
    t, values = _run(n_params, reads)
    nodes = t.nodes
    assert [n.parents for n in nodes] == _expected(n_params, reads)
    assert [n.output for n in nodes] == values
    graph = to_networkx(t)
    assert set(graph.edges) == {(p, n.index) for n in nodes for p in n.parents}
    assert graph.nodes[len(nodes) - 1]["name"] == "combine"


@settings(max_examples=60, deadline=None)
@given(workflows)
def test_dict_round_trip_is_identity(workflow):
    t, _ = _run(*workflow)
    data = t.to_dict()
    assert Trace.from_dict(data).to_dict() == data


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(workflows)
def test_store_round_trip_is_identity(tmp_path, workflow):
    t, values = _run(*workflow)
    from promptopt.graph.backward import backward

    backward(values[-1], 0.5, trace=t)
    with RunStore.create(tmp_path, task={"name": "g"}) as store:
        store.add_trace(t, candidate_id=None, example_id="3")
        (loaded,) = store.traces(example_id="3")
        assert loaded.to_dict() == t.to_dict()
        assert store.trace(t.id).to_dict() == t.to_dict()


def _workflow(seed: int) -> tuple[int, list[list[int]]]:
    rng = random.Random(seed)
    n_params = rng.randint(0, 3)
    reads = [sorted(rng.sample(range(n_params + i), min(n_params + i, rng.randint(0, 3))))
             for i in range(rng.randint(1, 8))]  # fmt: skip
    return n_params, reads


async def test_100_workflows_under_gather_get_their_own_nodes():
    specs = [_workflow(seed) for seed in range(100)]
    traces = await asyncio.gather(*[_arun(*spec, salt=f"w{i}") for i, spec in enumerate(specs)])
    for i, (spec, t) in enumerate(zip(specs, traces, strict=True)):
        assert t.name == f"w{i}"
        assert [n.parents for n in t.nodes] == _expected(*spec)
        assert all(f"w{i}" in n.output for n in t.nodes if n.kind == "param")


def test_8_threads_get_their_own_nodes():
    specs = [_workflow(seed) for seed in range(8 * 20)]
    results: dict[int, tuple[Trace, list[str]]] = {}
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        barrier.wait()
        for i in range(k, len(specs), 8):
            results[i] = _run(*specs[i], salt=f"t{i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == len(specs)
    for i, spec in enumerate(specs):
        t, values = results[i]
        assert [n.parents for n in t.nodes] == _expected(*spec)
        assert [n.output for n in t.nodes] == values
