"""Stage 1: the base model: built here (tiny profile) or a configured checkpoint, validated."""

from pathlib import Path

import dagster as dg

from assets_defs.decl import AssetDecl
from assets_defs.models import materialize_model, read_model
from assets_defs.resources import SalmonResource
from assets_defs.tables import table_name
from salmon_dag.base_model.corpus import BUNDLED_CORPUS_DIR
from salmon_dag.base_model.stage import STAGE as BASE_STAGE
from salmon_dag.config import Profile
from salmon_dag.lineage import DataFiles, files_hash
from salmon_dag.paths import resolve_local
from salmon_dag.settings import ACCELERATOR_POOL, Settings

STAGE_VERSION = "1"
GROUP = "models"
KEY = dg.AssetKey("base_model")


def _corpus_files(profile: Profile) -> DataFiles:
    # The tiny model is pre-trained on these files, written out by tiny_world.py: their content
    # decides its weights. The shared data folder's files are optional (used where it exists).
    from salmon_dag.base_model import corpus_sources, tiny_world
    from salmon_dag.base_model.corpus import SHARED_FILES

    cfg = profile.base_model
    inputs: list[Path | str] = []
    optional: tuple[Path, ...] = ()
    if cfg.kind == "tiny":
        inputs = [*sorted(BUNDLED_CORPUS_DIR.glob("*")), tiny_world.__file__, *corpus_sources(cfg.tiny.shared_data_dir)]
        if cfg.tiny.shared_data_dir:
            optional = tuple(resolve_local(cfg.tiny.shared_data_dir) / name for name in SHARED_FILES)
    elif cfg.kind == "random":  # its tokenizer is trained on the bundled corpus
        inputs = [*sorted(BUNDLED_CORPUS_DIR.glob("*")), tiny_world.__file__]
    required = tuple(Path(p) for p in inputs if Path(p).name not in {o.name for o in optional})
    return DataFiles(required=required, optional=optional, hash=files_hash(inputs))


BASE_MODEL_ASSET = AssetDecl(KEY, STAGE_VERSION, reads=BASE_STAGE.reads, data_files=_corpus_files)


def build_base_model_assets(settings: Settings) -> list:
    @BASE_MODEL_ASSET.asset(
        settings,
        description="Base LLM: a tiny Llama pre-trained here (tiny profile) or a Hub id / local path (real profiles).",
        group_name=GROUP,
        kinds={"pytorch", "huggingface"},
        pool=ACCELERATOR_POOL,
    )
    def base_model(context: dg.AssetExecutionContext, salmon: SalmonResource) -> dg.MaterializeResult:
        profile = salmon.load_profile()
        made = BASE_STAGE.run(salmon.stage_inputs(BASE_STAGE), salmon.warehouse.model_dir(table_name(KEY)),
                              log=context.log.info)
        return materialize_model(salmon.warehouse, KEY, BASE_MODEL_ASSET.lineage(context, profile), made.model_id,
                                 revision=made.revision, trust_remote_code=made.trust_remote_code, info=made.info,
                                 info_prefix="model", losses=made.losses)

    @dg.asset_check(asset=KEY, description="The checkpoint loads with from_pretrained and generates text.")
    def loads_and_generates(salmon: SalmonResource) -> dg.AssetCheckResult:
        from salmon_dag.base_model import load_causal_lm, load_tokenizer

        ref = read_model(salmon.warehouse, KEY)
        if not Path(ref.model_id).is_dir():
            return dg.AssetCheckResult(passed=True, metadata={"skipped": "remote model: validated at materialization"})
        tok = load_tokenizer(ref.model_id)
        model = load_causal_lm(ref.model_id)
        ids = tok("### User: Hello", return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
        new = out.shape[1] - ids["input_ids"].shape[1]
        return dg.AssetCheckResult(passed=new > 0, metadata={"new_tokens": new, "sample": tok.decode(out[0])})

    return [base_model, loads_and_generates]
