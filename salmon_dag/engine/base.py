"""The one engine interface every model call goes through.

Three operations cover the whole method:

* :meth:`Engine.generate` — self-align answers, response pairs, PPO rollouts, benchmarks;
* :meth:`Engine.next_token_logits` — the judge's verdict letter (and multiple choice);
* :meth:`Engine.sequence_logprobs` — log-prob of a given continuation (PPO, evaluation);

plus :meth:`Engine.shared_prefix_logits`, the judge's fast path: many suffixes (one per principle)
after one shared prefix (the request and the two outputs), scored from one encoded prefix.

Prompts are strings (encoded with the model's special tokens, e.g. BOS) or lists of token ids
(used as they are). Backends implement ``_generate_ids``, ``_next_token_logits_ids`` and
``_sequence_logprobs_ids`` on token ids; validation, truncation and decoding live here.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from salmon_dag.templates import STOP_SEQUENCES

Prompt = str | Sequence[int]
Truncation = Literal["error", "left"]
FinishReason = Literal["stop", "length"]


class EngineError(ValueError):
    """Bad engine input or configuration (message is one line)."""


class PromptTooLongError(EngineError):
    pass


def cut_at_stop(text: str, stops: Sequence[str] = STOP_SEQUENCES) -> tuple[str, bool]:
    """(``text`` before the earliest stop sequence, whether one occurs); empty stops are ignored."""
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def shared_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common token prefix of ``seqs``, capped so that every sequence keeps
    at least one token of its own (whose logits are what a caller needs)."""
    return min(len(os.path.commonprefix([list(s) for s in seqs])), min(len(s) for s in seqs) - 1)


@dataclass(frozen=True)
class SamplingParams:
    """How to generate. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = STOP_SEQUENCES
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise EngineError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise EngineError(f"n must be >= 1, got {self.n}")
        if self.n > 1 and self.temperature == 0:
            raise EngineError("n > 1 needs sampling (temperature > 0): greedy samples would be identical")


@dataclass(frozen=True)
class Completion:
    """One generated continuation.

    ``text`` is cut before the first stop sequence; ``token_ids`` are the generated tokens up to
    and including the one that completed the stop sequence (or EOS), which is what PPO trains on.
    ``logprobs`` (when asked) are the model's raw log-softmax values of those tokens, before
    temperature / top-p.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None


@dataclass
class Engine(ABC):
    """A loaded model behind one interface. Use :func:`salmon_dag.engine.create_engine`."""

    model_id: str
    tokenizer: object
    max_context: int
    truncation: Truncation = "error"
    stats: dict[str, int] = field(default_factory=lambda: {"forward_tokens": 0, "calls": 0})

    # ------------------------------------------------------------------ public API
    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt: strings get the model's special tokens (BOS), ids pass through."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        return list(prompt)

    def encode_suffix(self, text: str) -> list[int]:
        """Token ids of text that continues a prompt (no special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_shared(self, prompts: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """Encode whole prompts (with special tokens) and split them at their longest common token
        prefix: (prefix ids, remainder ids per prompt). Every remainder keeps at least one token,
        so it can be scored after the prefix; ``prefix + remainder`` is exactly ``encode(prompt)``."""
        if not prompts:
            raise EngineError("encode_shared needs at least one prompt")
        encoded = [list(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
        common = shared_prefix_length(encoded)
        return encoded[0][:common], [e[common:] for e in encoded]

    def fit(self, ids: list[int], reserve: int, index: int) -> list[int]:
        """Apply the truncation policy so that ``ids`` plus ``reserve`` new tokens fit the context.

        ``error`` (default) raises :class:`PromptTooLongError`; ``left`` keeps the last tokens
        (the end of a prompt, where the request and the answer cue are, matters most), re-adding
        BOS when the tokenizer has one.
        """
        limit = self.max_context - reserve
        if len(ids) <= limit:
            return ids
        if self.truncation == "error" or limit < 2:
            raise PromptTooLongError(
                f"prompt {index} has {len(ids)} tokens; the context window is {self.max_context} "
                f"with {reserve} reserved for new tokens (set engine truncation: left to cut it)"
            )
        bos = getattr(self.tokenizer, "bos_token_id", None)
        if bos is not None and ids and ids[0] == bos:
            return [bos, *ids[len(ids) - limit + 1 :]]
        return ids[len(ids) - limit :]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams = SamplingParams()) -> list[list[Completion]]:
        """``params.n`` completions for each prompt, in prompt order."""
        ids = [self.fit(self.encode(p), params.max_new_tokens, i) for i, p in enumerate(prompts)]
        if not ids:
            return []
        return self._generate_ids(ids, params)

    def next_token_logits(self, prompts: Sequence[Prompt], candidates: Sequence[int]) -> np.ndarray:
        """[len(prompts), len(candidates)] next-token scores of the candidate ids.

        Backends return raw logits or log-softmax values; differences between candidates (what
        the judge uses) are the same either way.
        """
        cands = self._check_candidates(candidates)
        ids = [self.fit(self.encode(p), 0, i) for i, p in enumerate(prompts)]
        if not ids:
            return np.zeros((0, len(cands)), dtype=np.float64)
        return self._next_token_logits_ids(ids, cands)

    def sequence_logprobs(self, prompts: Sequence[Prompt], continuations: Sequence[str | Sequence[int]]) -> list[np.ndarray]:
        """Per-token log-probs of each continuation given its prompt (one array per pair)."""
        if len(prompts) != len(continuations):
            raise EngineError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        pairs = []
        for i, (p, c) in enumerate(zip(prompts, continuations)):
            cont = self.encode_suffix(c) if isinstance(c, str) else list(c)
            if not cont:
                raise EngineError(f"continuation {i} is empty")
            prompt_ids = self.encode(p)
            if len(prompt_ids) + len(cont) > self.max_context:
                raise PromptTooLongError(
                    f"prompt {i} + continuation has {len(prompt_ids) + len(cont)} tokens; "
                    f"the context window is {self.max_context}"
                )
            pairs.append((prompt_ids, cont))
        return self._sequence_logprobs_ids(pairs) if pairs else []

    def shared_prefix_logits(
        self, prefixes: Sequence[Prompt], suffixes: Sequence[Sequence[str | Sequence[int]]], candidates: Sequence[int]
    ) -> list[np.ndarray]:
        """For each prefix i, a [len(suffixes[i]), len(candidates)] array of next-token scores
        after ``prefix_i + suffix_ij`` (token-level concatenation: the suffix is encoded on its own).

        Backends encode each prefix once (KV-cache reuse, prefix caching); this default falls back
        to :meth:`naive_prefix_logits`.
        """
        return self.naive_prefix_logits(prefixes, suffixes, candidates)

    def naive_prefix_logits(
        self, prefixes: Sequence[Prompt], suffixes: Sequence[Sequence[str | Sequence[int]]], candidates: Sequence[int]
    ) -> list[np.ndarray]:
        """Same result as :meth:`shared_prefix_logits`, re-encoding the whole prompt for every
        suffix (what the public SALMON code does); the reference for tests and benchmarks."""
        cands = self._check_candidates(candidates)
        jobs = self._shared_prefix_inputs(prefixes, suffixes)
        flat = [p + s for p, sufs in jobs for s in sufs]
        scores = self._next_token_logits_ids(flat, cands) if flat else np.zeros((0, len(cands)))
        out, start = [], 0
        for _, sufs in jobs:
            out.append(scores[start : start + len(sufs)])
            start += len(sufs)
        return out

    def close(self) -> None:
        """Free the model (and any worker processes)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers for backends
    def _check_candidates(self, candidates: Sequence[int]) -> list[int]:
        cands = [int(c) for c in candidates]
        vocab = len(self.tokenizer)
        if not cands or any(not 0 <= c < vocab for c in cands):
            raise EngineError(f"candidate token ids must be non-empty and in [0, {vocab}), got {cands}")
        return cands

    def _shared_prefix_inputs(
        self, prefixes: Sequence[Prompt], suffixes: Sequence[Sequence[str | Sequence[int]]]
    ) -> list[tuple[list[int], list[list[int]]]]:
        if len(prefixes) != len(suffixes):
            raise EngineError(f"{len(prefixes)} prefixes but {len(suffixes)} suffix lists")
        jobs = []
        for i, (p, sufs) in enumerate(zip(prefixes, suffixes)):
            prefix = self.encode(p)
            enc = [self.encode_suffix(s) if isinstance(s, str) else list(s) for s in sufs]
            if any(not s for s in enc):
                raise EngineError(f"prefix {i} has an empty suffix")
            longest = max((len(s) for s in enc), default=0)
            if len(prefix) + longest > self.max_context:
                if self.truncation == "error":
                    raise PromptTooLongError(
                        f"prompt {i} has {len(prefix) + longest} tokens (prefix {len(prefix)} + suffix "
                        f"{longest}); the context window is {self.max_context} (set engine truncation: left to cut it)"
                    )
                # left truncation cuts the shared prefix so that it fits with its longest suffix
                prefix = self.fit(prefix, longest, i)
            jobs.append((prefix, enc))
        return jobs

    def decode_completion(self, new_ids: list[int], stop: tuple[str, ...], eos_ids: set[int], hit_limit: bool,
                          logprobs: list[float] | None) -> Completion:
        """Cut generated ids at EOS or the first stop sequence and build the Completion."""
        ids = list(new_ids)
        finish: FinishReason = "length" if hit_limit else "stop"
        for k, t in enumerate(ids):
            if t in eos_ids:
                ids, finish = ids[: k + 1], "stop"
                break
        text = self.tokenizer.decode([t for t in ids if t not in eos_ids], skip_special_tokens=True)
        text, hit = cut_at_stop(text, stop)
        if hit:
            finish = "stop"
            # keep the tokens up to the one that completes the stop sequence (binary search: once
            # a decoded prefix contains a stop sequence, every longer prefix does too)
            lo, hi = 1, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                piece = self.tokenizer.decode(ids[:mid], skip_special_tokens=True)
                if any(s and s in piece for s in stop):
                    hi = mid
                else:
                    lo = mid + 1
            ids = ids[:lo]
        lp = tuple(logprobs[: len(ids)]) if logprobs is not None else None
        return Completion(text=text, token_ids=tuple(ids), finish_reason=finish, logprobs=lp)

    # ------------------------------------------------------------------ backend hooks
    @abstractmethod
    def _generate_ids(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]: ...

    @abstractmethod
    def _next_token_logits_ids(self, prompts: list[list[int]], candidates: list[int]) -> np.ndarray: ...

    @abstractmethod
    def _sequence_logprobs_ids(self, pairs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]: ...
