"""How TRL's RLOO / GRPO rollouts stop and are rewarded here (used by :mod:`salmon_dag.rl.trl_baseline`).

Stop sequences: TRL stops a completion only at EOS (``stop_strings`` needs a tokenizer passed to
``generate``, which TRL does not pass, trl#2820). The trainers here add a logits processor to
TRL's ``generate`` call that forces EOS right after a completion produces a stop sequence
(``templates.STOP_SEQUENCES``), so TRL's own EOS masking ends the completion there, as SFT taught
the model to (SFT completions end with the turn separator then EOS). The reward reads the text
before the stop sequence; its ``finish_reason`` is "stop" when the completion produced a stop
sequence or EOS, else "length".

The reward is :class:`~salmon_dag.rl.reward.SalmonReward`, passed to TRL as a Python reward
function (:class:`SalmonRewardFunction`) that records every completion as a ``ppo_samples`` row.
Plain Python: no dagster import here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList

from salmon_dag import templates
from salmon_dag.engine.base import cut_at_stop
from salmon_dag.rl.records import sample_row
from salmon_dag.rl.reward import RewardParts, SalmonReward


# --------------------------------------------------------------------------- reward
class SalmonRewardFunction:
    """A TRL reward function (``prompts, completions, completion_ids, **dataset columns,
    trainer_state``) computing :class:`SalmonReward` for every completion and recording it.

    ``step`` for the principle draws is ``trainer_state.global_step`` (optimizer steps done before
    this rollout). ``records`` gets one dict per completion, in call order."""

    __name__ = "salmon_reward"  # TRL names the reward metrics after it (rewards/salmon_reward/mean)

    def __init__(self, reward: SalmonReward, eos_token_ids: Sequence[int], stops: Sequence[str] = templates.STOP_SEQUENCES):
        self.reward = reward
        self.eos_token_ids = set(int(i) for i in eos_token_ids)
        self.stops = tuple(stops)
        self.records: list[dict[str, Any]] = []
        self.calls = 0

    def __call__(self, prompts, completions, completion_ids, instruction=None, question_type=None,
                 prompt_id=None, trainer_state=None, **_: Any) -> list[float]:
        if instruction is None or question_type is None:
            raise ValueError("salmon reward: the dataset needs 'instruction' and 'question_type' columns")
        step = int(trainer_state.global_step) if trainer_state is not None else self.calls
        self.calls += 1
        responses, stopped, tokens = [], [], []
        for text, ids in zip(completions, completion_ids, strict=True):
            response, hit = cut_at_stop(text, self.stops)
            responses.append(response.strip())
            stopped.append(hit or (len(ids) > 0 and int(ids[-1]) in self.eos_token_ids))
            tokens.append(len(ids))
        parts: list[RewardParts] = self.reward(step, list(instruction), responses, list(question_type), tokens, stopped)
        ids = list(prompt_id) if prompt_id is not None else [None] * len(parts)
        for pid, ins, qt, resp, n, done, p in zip(ids, instruction, question_type, responses, tokens, stopped, parts):
            self.records.append(sample_row(step, pid, qt, ins, resp, p, n, "stop" if done else "length"))
        return [p.total for p in parts]


# --------------------------------------------------------------------------- stop sequences
class StopSequenceToEos:
    """A logits processor: once a row's generated text (after ``prompt_len``) contains a stop
    sequence, its next token is EOS. Only the last ``window`` tokens are decoded per step (enough
    for the longest stop sequence, even one token per character), and a row is forced at most
    once (EOS ends it)."""

    def __init__(self, tokenizer, stops: Sequence[str], eos_token_id: int, prompt_len: int):
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.eos = int(eos_token_id)
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in self.stops) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_len:]
        if generated.shape[1] == 0:
            return scores
        tails = self.tokenizer.batch_decode(generated[:, -self.window:], skip_special_tokens=True)
        rows = [i for i, t in enumerate(tails) if any(s in t for s in self.stops)]
        if rows:
            scores[rows] = -math.inf
            scores[rows, self.eos] = 0.0
        return scores


class _StopOnSequences:
    """Mixin for TRL's trainers: TRL's ``generate`` call gets :class:`StopSequenceToEos`."""

    _salmon_stops: tuple[str, ...] = templates.STOP_SEQUENCES

    def _generate_single_turn(self, *args, **kwargs):
        model = self.accelerator.unwrap_model(self.model_wrapped)
        generate = model.generate
        tokenizer, stops, eos = self._tokenizer, self._salmon_stops, self._tokenizer.eos_token_id

        def generate_with_stops(*g_args, **g_kwargs):
            prompt_len = g_kwargs["input_ids"].shape[1]
            processors = LogitsProcessorList(g_kwargs.pop("logits_processor", None) or [])
            processors.append(StopSequenceToEos(tokenizer, stops, eos, prompt_len))
            return generate(*g_args, logits_processor=processors, **g_kwargs)

        model.generate = generate_with_stops  # an instance attribute, as TRL's own fused LM head patch
        try:
            return super()._generate_single_turn(*args, **kwargs)
        finally:
            del model.generate


def trainer_classes():
    """algorithm -> (TRL config class, its trainer with our stop sequences)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    class SalmonRLOOTrainer(_StopOnSequences, RLOOTrainer):
        pass

    class SalmonGRPOTrainer(_StopOnSequences, GRPOTrainer):
        pass

    return {"rloo": (RLOOConfig, SalmonRLOOTrainer), "grpo": (GRPOConfig, SalmonGRPOTrainer)}
