"""`salmon export`: the shared project's SFT data and preferences in each format, read back and
handed to TRL's own trainers, which check and prepare them (SFTTrainer, DPOTrainer, RewardTrainer)."""

from __future__ import annotations

import json

import polars as pl
import pytest

from projects import salmon

# the project's chat layout (salmon_dag.templates) as a chat template, for TRL to apply
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}### User: {{ m['content'] }}\n\n"
                 "{% else %}### Assistant: {{ m['content'] }}</s>{% endif %}{% endfor %}"
                 "{% if add_generation_prompt %}### Assistant:{% endif %}")


@pytest.mark.slow
def test_exports_are_what_trl_trainers_take(project, tmp_path):
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer
    from trl.data_utils import is_conversational

    root, _ = project
    wh = root / "warehouse"
    out = {}
    for name in ("sft", "preferences"):
        for fmt, suffix in (("hf", ""), ("jsonl", ".jsonl"), ("parquet", ".parquet")):
            path = tmp_path / f"{name}{suffix}"
            line = salmon(project, "export", name, "--format", fmt, "--out", str(path)).stdout
            assert f"-> {path}" in line and path.exists()
        out[name] = datasets.load_from_disk(str(tmp_path / name))
        flat = pl.read_parquet(tmp_path / f"{name}.parquet")
        assert flat.height == out[name].num_rows == sum(1 for _ in open(tmp_path / f"{name}.jsonl"))

    sft, prefs = out["sft"], out["preferences"]
    kept = pl.read_parquet(wh / "self_align_sft_data" / "data.parquet").filter(pl.col("filter_reason").is_null())
    assert sft.num_rows == kept.height and is_conversational(sft[0])
    assert [m["role"] for m in sft[0]["messages"]] == ["user", "assistant"]
    examples = pl.read_parquet(wh / "rm_training_data" / "data.parquet")
    assert prefs.num_rows == examples.height and is_conversational(prefs[0])
    first = examples.row(0, named=True)
    winner = first["response_1"] if first["preferred"] == 1 else first["response_2"]
    row = prefs[0]
    assert row["chosen"][0]["content"] == winner and row["prompt"][0]["content"] == first["prompt"]
    assert [p["name"] for p in row["principles"]] == [p["name"] for p in json.loads(first["principles"])]
    assert row["deciding_principle"] == first["deciding_principle"]

    base = str(wh / "models" / "base_model")
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHAT_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    common = dict(output_dir=str(tmp_path / "trl"), report_to=[], max_steps=1, per_device_train_batch_size=2,
                  use_cpu=True)
    # each trainer checks and tokenizes the data when it is built; one step each shows it trains on it
    SFTTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=SFTConfig(**common), train_dataset=sft,
               processing_class=tok).train()
    DPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=DPOConfig(**common),
               train_dataset=prefs, processing_class=tok).train()
    rm = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    RewardTrainer(model=rm, args=RewardConfig(**common), train_dataset=prefs, processing_class=tok).train()


def test_export_refuses_other_tables_and_formats(tmp_path):
    from salmon_dag.export import export_table
    from salmon_dag.warehouse import Warehouse

    with pytest.raises(ValueError, match="cannot export 'ppo_steps'"):
        export_table(Warehouse(tmp_path), "ppo_steps", "hf")
    with pytest.raises(ValueError, match="--format must be one of hf, jsonl, parquet"):
        export_table(Warehouse(tmp_path), "sft", "csv")
