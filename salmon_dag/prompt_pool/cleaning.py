"""Clean raw prompts into the prompt pool: normalise, filter, deduplicate, tag, split.

Every dropped prompt becomes a reject row with a reason, so the pool's shrinkage is auditable.
The result depends only on the input order, the config and the seed (no clocks, no set order).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import polars as pl
from datasketch import MinHash, MinHashLSH

from salmon_dag.prompt_pool.config import PromptPoolConfig
from salmon_dag.prompt_pool.classify import classify_question_type
from salmon_dag.prompt_pool.sources import MAX_REJECT_TEXT, RawPrompt, Reject
from salmon_dag.rules import detect_language

POOL_SCHEMA = pl.Schema(
    {
        "prompt_id": pl.Utf8,
        "prompt": pl.Utf8,
        "question_type": pl.Utf8,
        "language": pl.Utf8,
        "source": pl.Utf8,
        "source_row": pl.Int64,
        "split": pl.Utf8,
        "n_chars": pl.Int64,
    }
)
REJECTS_SCHEMA = pl.Schema(
    {"source": pl.Utf8, "source_row": pl.Int64, "text": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8}
)

_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\x85\x0b\x0c]")
_ASCII_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"[ \t]+")
_SPACES_AROUND_NEWLINE = re.compile(r" ?\n ?")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_WORDS = re.compile(r"\w+")


# --------------------------------------------------------------------------- text
def normalize_text(text: str) -> str:
    """Canonical form of a prompt: the text that is stored, hashed and compared.

    NFKC (full-width letters, ligatures, non-breaking spaces become plain ones); every line
    break style becomes "\\n"; control and format characters (zero-width spaces/joiners, BOM,
    soft hyphen, bidi marks) are dropped; runs of spaces/tabs become one space; spaces at line
    edges go; 3+ newlines become a blank line; the ends are stripped.
    """
    text = _LINE_BREAKS.sub("\n", unicodedata.normalize("NFKC", text))
    if text.isascii():  # fast path: only ASCII controls can occur
        text = _ASCII_CONTROLS.sub("", text)
    else:
        text = "".join(
            ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
        )
    text = _SPACES.sub(" ", text)
    text = _SPACES_AROUND_NEWLINE.sub("\n", text)
    return _MANY_NEWLINES.sub("\n\n", text).strip()


def prompt_id(text: str) -> str:
    """Stable id of a prompt: the first 16 hex characters of sha256 of its normalised text."""
    return _hash_id(normalize_text(text))


def _hash_id(normalized: str) -> str:
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()[:16]


def shingles(text: str) -> frozenset[str]:
    """Word 3-grams of the lowercased text (character 5-grams when it has under 3 words).

    Words are ``\\w+`` runs, so punctuation differences alone do not make prompts differ.
    """
    lowered = text.lower()
    words = _WORDS.findall(lowered)
    if len(words) >= 3:
        return frozenset(" ".join(words[i : i + 3]) for i in range(len(words) - 2))
    if len(lowered) <= 5:
        return frozenset([lowered])
    return frozenset(lowered[i : i + 5] for i in range(len(lowered) - 4))


def assign_split(pid: str, seed: int, eval_fraction: float) -> str:
    """``eval`` for a seeded-hash fraction of prompts, else ``train``; stable per (seed, id)."""
    value = int(hashlib.sha256(f"{seed}{pid}".encode()).hexdigest(), 16) / 2**256
    return "eval" if value < eval_fraction else "train"


# --------------------------------------------------------------------------- near duplicates
def lsh_params(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """LSH (bands, rows) that find pairs at Jaccard ``threshold`` with probability >= ``recall``.

    datasketch's default parameters weigh misses and false candidates equally, which at 0.8 and
    128 permutations finds only ~40% of pairs right at the threshold. Candidates are verified
    with exact Jaccard here, so false candidates only cost a set intersection: favour recall,
    and among such settings take the most rows per band (fewest false candidates).
    """
    for rows in range(num_perm // 2, 0, -1):  # datasketch needs at least 2 bands
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


@dataclass
class _NearDuplicateIndex:
    """MinHash LSH over the kept prompts; candidates are verified with exact Jaccard."""

    threshold: float
    num_perm: int
    seed: int

    def __post_init__(self) -> None:
        params = lsh_params(self.threshold, self.num_perm)
        self._lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, params=params)
        self._shingles: dict[str, frozenset[str]] = {}
        self._order: dict[str, int] = {}
        # datasketch seeds numpy's RandomState, which needs 0 <= seed < 2**32. Drawing the
        # permutations once and sharing them is what makes later MinHashes cheap to create.
        self._template = MinHash(num_perm=self.num_perm, seed=self.seed % 2**32)

    def _minhash(self, grams: frozenset[str]) -> MinHash:
        t = self._template
        mh = MinHash(num_perm=t.num_perm, seed=t.seed, permutations=t.permutations, scheme=t.scheme)
        mh.update_batch([g.encode("utf-8") for g in sorted(grams)])
        return mh

    def match(self, grams: frozenset[str]) -> tuple[str | None, MinHash]:
        """The kept prompt this one nearly duplicates (most similar, then earliest), or None."""
        mh = self._minhash(grams)
        best: tuple[float, int, str] | None = None
        for key in self._lsh.query(mh):
            kept = self._shingles[key]
            jaccard = len(grams & kept) / len(grams | kept)
            if jaccard >= self.threshold:
                rank = (-jaccard, self._order[key], key)
                best = rank if best is None or rank < best else best
        return (best[2] if best else None), mh

    def add(self, key: str, grams: frozenset[str], mh: MinHash) -> None:
        self._order[key] = len(self._order)
        self._shingles[key] = grams
        self._lsh.insert(key, mh)


# --------------------------------------------------------------------------- pool
def rejects_frame(rejects: list[Reject]) -> pl.DataFrame:
    """Reject rows as a frame with :data:`REJECTS_SCHEMA`, sorted by (source, source_row)."""
    rows = [(r.source, r.source_row, r.text[:MAX_REJECT_TEXT], r.reason, r.detail) for r in rejects]
    frame = pl.DataFrame(rows, schema=REJECTS_SCHEMA, orient="row")
    return frame.sort("source", "source_row", maintain_order=True)


def build_prompt_pool(
    raw: list[RawPrompt], cfg: PromptPoolConfig, seed: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Turn raw prompts into ``(pool, rejects)`` frames (schemas :data:`POOL_SCHEMA`, :data:`REJECTS_SCHEMA`).

    Each prompt passes, in order: normalisation; ``empty``; ``too_short`` / ``too_long``
    (``cfg.min_chars`` / ``cfg.max_chars``, in characters of normalised text);
    ``exact_duplicate`` (case-insensitive); ``near_duplicate`` (MinHash LSH + exact Jaccard >=
    ``cfg.near_duplicate_threshold``); ``language_not_allowed`` (py3langid, only when
    ``cfg.allowed_languages`` is set). Prompts are processed in input order and only prompts
    that pass every step count as "kept", so the first occurrence wins and a duplicate's detail
    always names a prompt_id that is in the pool.
    """
    allowed = {lang.lower() for lang in cfg.allowed_languages} if cfg.allowed_languages else None
    near = _NearDuplicateIndex(cfg.near_duplicate_threshold, cfg.minhash_num_perm, seed)
    kept_by_key: dict[str, str] = {}  # casefolded text -> prompt_id of the kept prompt
    pool_rows: list[tuple] = []
    rejects: list[Reject] = []

    def reject(item: RawPrompt, reason: str, detail: str) -> None:
        rejects.append(Reject(item.source, item.source_row, item.text[:MAX_REJECT_TEXT], reason, detail))

    for item in raw:
        text = normalize_text(item.text)
        n_chars = len(text)
        if not text:
            reject(item, "empty", "no text left after normalisation")
            continue
        if n_chars < cfg.min_chars:
            reject(item, "too_short", f"{n_chars} chars < min_chars {cfg.min_chars}")
            continue
        if n_chars > cfg.max_chars:
            reject(item, "too_long", f"{n_chars} chars > max_chars {cfg.max_chars}")
            continue
        key = text.casefold()
        if key in kept_by_key:
            reject(item, "exact_duplicate", kept_by_key[key])
            continue
        grams = shingles(text)
        twin, mh = near.match(grams)
        if twin is not None:
            reject(item, "near_duplicate", twin)
            continue
        language = detect_language(text)
        if allowed is not None and language not in allowed:
            reject(item, "language_not_allowed", language)
            continue

        pid = _hash_id(text)
        kept_by_key[key] = pid
        near.add(pid, grams, mh)
        qtype = item.question_type or classify_question_type(text)
        split = assign_split(pid, seed, cfg.eval_fraction)
        pool_rows.append((pid, text, qtype, language, item.source, item.source_row, split, n_chars))

    pool = pl.DataFrame(pool_rows, schema=POOL_SCHEMA, orient="row").sort("prompt_id")
    return pool, rejects_frame(rejects)
