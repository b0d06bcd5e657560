"""Hugging Face transformers backend: CPU or CUDA, always available.

Batches are sorted by length and left-padded, with attention masks and position ids derived from
the mask, so padding never changes a result. ``shared_prefix_logits`` encodes each judge prefix
once and scores every principle suffix from its KV cache; generation encodes a long prompt
prefix shared by a batch (the self-align principles and exemplars) once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from transformers import DynamicCache

from salmon_dag.engine.base import Completion, Engine, Prompt, SamplingParams, shared_prefix_length

# Prompts of one generation batch that share at least this many leading tokens encode them once.
SHARED_PROMPT_MIN_TOKENS = 64


class HFEngine(Engine):
    def __init__(self, model_id: str, model, tokenizer, max_context: int, truncation: str = "error",
                 max_batch_size: int = 16, cpu_threads: int | None = None):
        super().__init__(model_id=model_id, tokenizer=tokenizer, max_context=max_context, truncation=truncation)
        self.model = model
        self.max_batch_size = max_batch_size
        self.cpu_threads = cpu_threads
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {e for e in [*eos, tokenizer.eos_token_id] if e is not None}

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _inference(self) -> Iterator[None]:
        prev = torch.get_num_threads()
        if self.cpu_threads and self.device.type == "cpu":
            torch.set_num_threads(self.cpu_threads)
        try:
            with torch.inference_mode():
                yield
        finally:
            torch.set_num_threads(prev)

    def _batches(self, lengths: Sequence[int], size: int | None = None) -> Iterator[list[int]]:
        """Indices grouped into batches of similar length (longest first: memory peaks early)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        size = size or self.max_batch_size
        for start in range(0, len(order), size):
            yield order[start : start + size]

    def _left_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask, position_ids), left-padded; positions count real tokens only."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, s in enumerate(seqs):
            ids[row, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[row, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _forward(self, ids, mask, positions, **kw):
        self.stats["calls"] += 1
        # tokens computed in this call (the mask also covers cached prefix positions)
        self.stats["forward_tokens"] += int(mask[:, -ids.shape[1] :].sum())
        return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kw)

    # ------------------------------------------------------------------ scoring
    def _next_token_logits_ids(self, prompts: list[list[int]], candidates: list[int]) -> np.ndarray:
        out = np.zeros((len(prompts), len(candidates)), dtype=np.float64)
        cand = torch.tensor(candidates, device=self.device)
        with self._inference():
            for batch in self._batches([len(p) for p in prompts]):
                ids, mask, pos = self._left_pad([prompts[i] for i in batch])
                logits = self._forward(ids, mask, pos, logits_to_keep=1).logits[:, -1, :]
                out[batch] = logits.index_select(-1, cand).double().cpu().numpy()
        return out

    def _sequence_logprobs_ids(self, pairs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.zeros(0)] * len(pairs)
        with self._inference():
            for batch in self._batches([len(p) + len(c) for p, c in pairs]):
                seqs = [pairs[i][0] + pairs[i][1] for i in batch]
                ids, mask, pos = self._left_pad(seqs)
                logp = torch.log_softmax(self._forward(ids, mask, pos).logits.float(), dim=-1)
                width = ids.shape[1]
                for row, i in enumerate(batch):
                    n = len(pairs[i][1])
                    # logits at t predict token t+1: the continuation's n tokens end the row
                    steps = logp[row, width - n - 1 : width - 1]
                    target = ids[row, width - n :]
                    out[i] = steps.gather(-1, target[:, None])[:, 0].double().cpu().numpy()
        return out

    def shared_prefix_logits(self, prefixes: Sequence[Prompt], suffixes, candidates: Sequence[int]) -> list[np.ndarray]:
        cands = self._check_candidates(candidates)
        jobs = self._shared_prefix_inputs(prefixes, suffixes)
        cand = torch.tensor(cands, device=self.device)
        out = [np.zeros((len(s), len(cands)), dtype=np.float64) for _, s in jobs]
        with self._inference():
            # A batch of prefixes is encoded once; then suffix j of every prefix in the batch runs
            # as one chunk ("column"), whose rows line up with the prefix cache, so the cache is
            # used as it is instead of gathered row by row (the judge's suffix j is the same
            # principle for every prefix, so a column also has near-equal lengths).
            for members in self._batches([len(p) for p, _ in jobs]):
                p_ids, p_mask, p_pos = self._left_pad([jobs[m][0] for m in members])
                cache = self._forward(p_ids, p_mask, p_pos, use_cache=True, logits_to_keep=1).past_key_values
                layers = _cache_layers(cache)
                real_len = p_mask.sum(-1)
                for j in range(max(len(jobs[m][1]) for m in members)):
                    rows = [(g, m) for g, m in enumerate(members) if j < len(jobs[m][1])]
                    scores = self._suffix_scores(layers, p_mask, real_len, rows, [jobs[m][1][j] for _, m in rows],
                                                 cand, all_rows=len(rows) == len(members))
                    for (_, m), row in zip(rows, scores):
                        out[m][j] = row
        return out

    def _suffix_scores(self, layers, p_mask, real_len, rows, suffixes, cand, all_rows: bool) -> np.ndarray:
        """Score one suffix per row after its prefix's cached keys and values.

        Suffixes are left-padded too (pads sit between prefix and suffix, masked out), so every
        row ends at its last real token and only one logits row per suffix is computed. When the
        rows are the whole prefix batch the cache tensors are used without a copy.
        """
        if not all_rows:
            select = torch.tensor([g for g, _ in rows], device=self.device)
            layers = [(k.index_select(0, select), v.index_select(0, select)) for k, v in layers]
            p_mask, real_len = p_mask.index_select(0, select), real_len.index_select(0, select)
        s_ids, s_mask, s_pos = self._left_pad(suffixes)
        mask = torch.cat([p_mask, s_mask], dim=-1)
        logits = self._forward(s_ids, mask, real_len[:, None] + s_pos, past_key_values=_cache_over(layers),
                               logits_to_keep=1).logits
        return logits[:, -1, :].index_select(-1, cand).double().cpu().numpy()

    # ------------------------------------------------------------------ generation
    def _shared_prompt_inputs(self, seqs: list[list[int]], n: int) -> tuple[torch.Tensor, torch.Tensor, DynamicCache | None]:
        """(input_ids, attention_mask, past_key_values) for generating from ``seqs``.

        When the prompts share a long token prefix (the self-align prompt: ~3.5k tokens of
        principles and exemplars before each request) it is encoded once, its cache is expanded to
        every row (``n`` samples per prompt), and each row is ``prefix + pads + own tail``: the
        pads are masked out and positions follow the mask, so rows see exactly their own prompt.
        Otherwise: plain left padding and no cache.
        """
        shared = shared_prefix_length(seqs)
        if shared < SHARED_PROMPT_MIN_TOKENS:
            ids, mask, _ = self._left_pad(seqs)
            return ids, mask, None
        prefix = torch.tensor([seqs[0][:shared]], device=self.device)
        ones = torch.ones_like(prefix)
        cache = self._forward(prefix, ones, (ones.cumsum(-1) - 1), use_cache=True, logits_to_keep=1).past_key_values
        rows = len(seqs) * n
        layers = [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in _cache_layers(cache)]
        t_ids, t_mask, _ = self._left_pad([q[shared:] for q in seqs])
        ids = torch.cat([prefix.expand(len(seqs), -1), t_ids], dim=-1)
        mask = torch.cat([ones.expand(len(seqs), -1), t_mask], dim=-1)
        return ids, mask, _cache_over(layers)

    def _generate_ids(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in prompts]
        sample = params.temperature > 0
        per_batch = max(1, self.max_batch_size // params.n)
        with self._inference():
            for b, batch in enumerate(self._batches([len(p) for p in prompts], size=per_batch)):
                ids, mask, cache = self._shared_prompt_inputs([prompts[i] for i in batch], params.n)
                if params.seed is not None:
                    torch.manual_seed(params.seed + b)  # reproducible for the same inputs and batching
                kwargs = dict(
                    max_new_tokens=params.max_new_tokens,
                    do_sample=sample,
                    num_return_sequences=params.n,
                    pad_token_id=self.pad_id,
                    eos_token_id=sorted(self.eos_ids),
                    return_dict_in_generate=True,
                    output_logits=params.logprobs,
                )
                if sample:
                    kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                if params.stop:
                    kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
                if cache is not None:
                    kwargs.update(past_key_values=cache)
                self.stats["calls"] += 1
                gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
                new = gen.sequences[:, ids.shape[1] :]
                steps = torch.stack(gen.logits, dim=1).float().log_softmax(-1) if params.logprobs else None
                for row in range(new.shape[0]):
                    toks = new[row].tolist()
                    while toks and toks[-1] == self.pad_id and self.pad_id not in self.eos_ids:
                        toks.pop()
                    lp = None
                    if steps is not None:
                        lp = steps[row, : len(toks)].gather(-1, new[row, : len(toks), None])[:, 0].tolist()
                    hit_limit = len(toks) >= params.max_new_tokens
                    done = self.decode_completion(toks, params.stop, self.eos_ids, hit_limit, lp)
                    results[batch[row // params.n]].append(done)
                    self.stats["forward_tokens"] += len(toks)
        return results


def _cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a transformers DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache_over(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
    """A DynamicCache holding the given tensors without copying them (filling a fresh cache with
    ``update`` would concatenate them onto an empty tensor). A forward pass then concatenates its
    new keys into new tensors, so the given ones stay untouched for the next suffix chunk."""
    cache = DynamicCache(ddp_cache_data=[(k[:, :, :0], v[:, :, :0]) for k, v in layers])
    for layer, (keys, values) in zip(cache.layers, layers):
        layer.keys, layer.values = keys, values
    return cache
