"""Evaluating one benchmark with any rollout engine, in resumable chunks.

Layer L0 by its imports (the engine is passed in; nothing here imports JAX), used by the
evaluate CLI (L6), the trainer's validation (`validation.Validator`) and the throughput bench.

    problems ─chunks of C─► chat template ─► engine.generate(P prompts, k, sampling(seed_c))
        ─► decode (special tokens skipped) ─► grade in a VerifyPool ─► records ─► JSONL (append,
        flush, fsync per chunk)

Resume: records are keyed by the problem's index in the benchmark. On start, `RecordStore`
reads the JSONL, drops a torn last line (a kill mid-write) and records with another sample
count, rewrites the file without them, and the run skips every chunk whose problems are all
recorded. A chunk with some problems missing is generated again *whole* and only the missing
records are appended: chunk c always holds problems [cC, (c+1)C) and samples with seed
`chunk_seed(seed, benchmark, c)`, and both engines derive each row's randomness from the seed
and the row's position in the call (jax_engine.py, vllm_engine.py), so a resumed run writes
the same records as an uninterrupted one with the same seed and chunk size.

Records (one JSON line per problem): benchmark, index, id, prompt (the rendered chat text),
gold, gold_extracted, and per sample (lists of length k) completions, extracted, correct,
num_tokens, finish_reasons; `errors` when grading a sample failed (timeout, crash).

Departures from Open-RS's lighteval runs (numbered; grading's own are in grading.py):
1. Seeds: each chunk samples with `chunk_seed(seed, benchmark, chunk)` so that runs are
   reproducible and resumable; lighteval left vLLM's sampling unseeded.
2. Length: lighteval ran vLLM with max_model_length = max_new_tokens = 32,768, so prompt +
   completion were capped at 32,768; we cap the completion alone at `max_new_tokens` (a few
   hundred tokens more room, which matters only for completions that long).
3. `think_prefill` appends `<think>\\n` to a chat template that does not end with it (the
   R1-distill template revision of the time did; ../shared/data/README.md). Turn it off
   (`--no-think-prefill`) to use a template exactly as shipped.
4. k > 1 samples, avg@k, pass@k and standard errors are additions; pass@1 (sample 0) is the
   paper's metric.
5. Input tokens: lighteval's vLLM backend tokenized the chat-template text with the tokenizer's
   special tokens added, and the R1-distill template writes its BOS as text, so Open-RS's
   evaluations fed the model two BOS tokens. We encode the template text as is (one BOS, as
   the model was trained); `add_special_tokens=True` (`evaluate --lighteval-tokens`)
   reproduces lighteval's tokens exactly.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time
import zlib
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from openrs_jax.data.tokenizer import PromptFormatter
from openrs_jax.eval import benchmarks as bm
from openrs_jax.eval import grading, metrics
from openrs_jax.progress import Progress
from openrs_jax.rewards.verify_pool import VerifyPool
from openrs_jax.rollout.base import FINISH_LENGTH, RolloutEngine, SamplingParams

# No truncation of eval prompts (lighteval sends them whole); PromptFormatter needs a bound.
_NO_TRUNCATION = 1 << 30


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """What defines an evaluation. Defaults: the paper's (lighteval, Open-RS README).

    samples: k completions per problem (pass@1 uses the first).
    chunk_size: problems per `generate` call (and per JSONL append: the resume granularity).
    think_prefill: append `<think>\\n` after the generation prompt when the template does not
      (the R1-distill template revision Open-RS evaluated with ends with it; data/tokenizer.py).
    add_special_tokens: encode prompts as lighteval did (departure 5): the tokenizer's special
      tokens added to the template text.
    """

    samples: int = 1
    max_new_tokens: int = bm.MAX_NEW_TOKENS
    temperature: float = bm.TEMPERATURE
    top_p: float = bm.TOP_P
    seed: int = 0
    chunk_size: int = 64
    think_prefill: bool = True
    add_special_tokens: bool = False

    def __post_init__(self):
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p)

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed
        )


def chunk_seed(seed: int, benchmark: str, chunk: int) -> int:
    """The sampling seed of chunk `chunk` of `benchmark`: a stable hash (not Python's salted
    `hash`), different per benchmark and chunk, in [0, 2^31)."""
    return zlib.crc32(f"{int(seed)}:{benchmark}:{int(chunk)}".encode()) & 0x7FFFFFFF


def make_formatter(tokenizer: Any, settings: EvalSettings) -> PromptFormatter:
    """The model's chat template, no system prompt (lighteval --use-chat-template)."""
    return PromptFormatter(
        tokenizer, system_prompt=None, add_think_prefill=settings.think_prefill, max_prompt_length=_NO_TRUNCATION,
        add_special_tokens=settings.add_special_tokens,
    )


# ---------------------------------------------------------------------------- records
class Records(Protocol):
    """What `evaluate_benchmark` needs of a benchmark's records: `RecordStore`, or the view
    of it that every process of a multi-process evaluation shares (`evaluate.SharedStore`)."""

    path: pathlib.Path
    dropped: int  # lines dropped by the last `load`

    def load(self) -> dict[int, dict[str, Any]]: ...

    def append(self, records: Sequence[dict[str, Any]]) -> None: ...


class RecordStore:
    """The per-problem JSONL of one benchmark, appended once per chunk (flush + fsync)."""

    def __init__(self, path: str | os.PathLike, samples: int):
        self.path = pathlib.Path(path)
        self.samples = int(samples)
        self.dropped = 0  # lines dropped by the last `load` (torn or from another k)

    def load(self) -> dict[int, dict[str, Any]]:
        """index -> record, for complete records with `samples` samples. A line that does not
        parse (a torn write) or has another sample count is dropped, and the file rewritten
        without such lines, so the next append starts on a clean line."""
        if not self.path.exists():
            return {}
        records: dict[int, dict[str, Any]] = {}
        kept: list[str] = []
        dropped = 0
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    dropped += 1
                    continue
                if (
                    not isinstance(record, dict)
                    or not isinstance(record.get("index"), int)
                    or len(record.get("correct", ())) != self.samples
                    or record["index"] in records
                ):
                    dropped += 1
                    continue
                records[record["index"]] = record
                kept.append(line if line.endswith("\n") else line + "\n")
        self.dropped = dropped
        if dropped:
            from openrs_jax.eval.report import atomic_write_text

            atomic_write_text(self.path, "".join(kept))
        return records

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        """All lines of a chunk in one write, then flush and fsync: a kill leaves at most one
        torn line at the end, which `load` drops."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


# ---------------------------------------------------------------------------- one benchmark
@dataclasses.dataclass
class BenchmarkRun:
    """The outcome of `evaluate_benchmark`: the records of the requested problems (in
    order), their summary, and what this call itself generated (0 when all was resumed)."""

    benchmark: str
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    generated_tokens: int
    generate_s: float
    grade_s: float
    resumed: int


def _records_for_chunk(
    problems: Sequence[bm.Problem],
    prompt_texts: Sequence[str],
    completions: Sequence[str],
    grades: Sequence[grading.Grade],
    lengths: Sequence[int],
    finish_reasons: Sequence[str],
    k: int,
) -> list[dict[str, Any]]:
    records = []
    for p, problem in enumerate(problems):
        rows = range(p * k, (p + 1) * k)
        record = {
            "benchmark": problem.benchmark,
            "index": problem.index,
            "id": problem.id,
            "prompt": prompt_texts[p],
            "gold": problem.gold,
            "gold_extracted": next((grades[b].gold_extracted for b in rows if grades[b].gold_extracted), None),
            "completions": [completions[b] for b in rows],
            "extracted": [grades[b].extracted for b in rows],
            "correct": [bool(grades[b].correct) for b in rows],
            "num_tokens": [int(lengths[b]) for b in rows],
            "finish_reasons": [finish_reasons[b] for b in rows],
        }
        errors = [grades[b].error for b in rows]
        if any(errors):
            record["errors"] = errors
        records.append(record)
    return records


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """metrics.summarize over the records' correctness, plus completion-length statistics."""
    correct = np.array([r["correct"] for r in records], dtype=bool)
    summary: dict[str, Any] = metrics.summarize(correct)
    tokens = np.array([r["num_tokens"] for r in records], dtype=np.float64)
    clipped = np.array([[f == FINISH_LENGTH for f in r["finish_reasons"]] for r in records], dtype=np.float64)
    summary["mean_completion_tokens"] = float(tokens.mean())
    summary["clipped_ratio"] = float(clipped.mean())
    summary["grading_errors"] = int(sum(sum(1 for e in r.get("errors", ()) if e) for r in records))
    return summary


def evaluate_benchmark(
    problems: Sequence[bm.Problem],
    engine: RolloutEngine,
    tokenizer: Any,
    settings: EvalSettings,
    pool: VerifyPool,
    store: Records | None = None,
    log: Callable[[str], None] | None = None,
    max_chunks: int | None = None,
    progress_stream: Any = None,
) -> BenchmarkRun:
    """Generates, grades and records every problem of one benchmark not yet in `store`.

    problems: one benchmark's problems, each with a distinct `index` (the record key). Chunks
      are taken by position in this list: resume with the same list (a longer prefix of the
      same file is fine), so chunk boundaries do not move between runs.
    store: where records live; None keeps them in memory only (validation).
    max_chunks: stop after generating this many chunks (tests of resume); the summary then
      covers only the problems recorded so far.
    progress_stream: show a progress bar with ETA over the completions to generate on this
      stream (`openrs_jax.progress`: a bar on a terminal, periodic lines otherwise), advanced
      as the engine finishes rows when it reports them (`RolloutEngine.progress`); None: none.
    """
    if not problems:
        raise ValueError("evaluate_benchmark: no problems")
    name = problems[0].benchmark
    if any(p.benchmark != name for p in problems):
        raise ValueError("evaluate_benchmark: problems of more than one benchmark")
    if len({p.index for p in problems}) != len(problems):
        raise ValueError(f"{name}: problem indices must be distinct (they key the records)")
    log = log or (lambda message: None)
    k = settings.samples
    done = store.load() if store is not None else {}
    if store is not None and store.dropped:
        log(f"[{name}] dropped {store.dropped} torn or incompatible line(s) from {store.path}")
    for p in problems:
        if p.index in done and done[p.index].get("id") != p.id:
            raise ValueError(
                f"{name}: record {p.index} in {store.path if store else 'memory'} is for id "
                f"{done[p.index].get('id')!r}, but the benchmark now has {p.id!r} there; the data changed, "
                "use a fresh --output directory"
            )
    resumed = sum(1 for p in problems if p.index in done)
    formatter = make_formatter(tokenizer, settings)
    chunks = [problems[i : i + settings.chunk_size] for i in range(0, len(problems), settings.chunk_size)]
    todo = [c for c, chunk in enumerate(chunks) if any(p.index not in done for p in chunk)]
    if resumed:
        log(f"[{name}] resuming: {resumed}/{len(problems)} problems already recorded")
    bar = None
    if progress_stream is not None:
        bar = Progress(sum(len(chunks[c]) for c in todo[:max_chunks]) * k, f"eval {name}", unit="seq",
                       stream=progress_stream)
    generated, generate_s, grade_s, correct_so_far = 0, 0.0, 0.0, 0
    for n_chunk, c in enumerate(todo):
        if max_chunks is not None and n_chunk >= max_chunks:
            break
        chunk = chunks[c]
        encoded = [formatter.encode(p.query) for p in chunk]
        t0 = time.perf_counter()
        base = 0 if bar is None else bar.n  # rows done before this chunk
        if bar is not None:
            engine.progress = lambda done, total, base=base: bar.update_to(base + done)
        try:
            batch = engine.generate([ids for ids, _ in encoded], k,
                                    settings.sampling(chunk_seed(settings.seed, name, c)))
        finally:
            if bar is not None:
                engine.progress = None
        t1 = time.perf_counter()
        completions = tokenizer.batch_decode(batch.completion_token_lists(), skip_special_tokens=True)
        golds = [p.gold for p in chunk for _ in range(k)]
        modes: list[bm.GoldMode] = [p.gold_mode for p in chunk for _ in range(k)]
        grades = grading.grade_batch(completions, golds, modes, pool)
        t2 = time.perf_counter()
        records = _records_for_chunk(
            chunk, [text for _, text in encoded], completions, grades, batch.lengths.tolist(), batch.finish_reasons, k
        )
        new = [r for r in records if r["index"] not in done]
        if store is not None:
            store.append(new)
        done.update({r["index"]: r for r in new})
        tokens = int(batch.lengths.sum())
        generated += tokens
        generate_s += t1 - t0
        grade_s += t2 - t1
        n_correct = sum(sum(r["correct"]) for r in records)
        correct_so_far += n_correct
        if bar is not None:
            bar.update_to(base + len(chunk) * k, postfix=f"{correct_so_far} correct")
        log(
            f"[{name}] chunk {c + 1}/{len(chunks)}: {len(chunk)} problems x {k} samples, {tokens} tokens in "
            f"{t1 - t0:.1f} s ({tokens / max(t1 - t0, 1e-9):,.0f} tok/s), graded in {t2 - t1:.1f} s, "
            f"{n_correct}/{len(chunk) * k} correct"
        )
    if bar is not None:
        bar.close()
    records = [done[p.index] for p in problems if p.index in done]
    summary = summarize_records(records) if records else {"n": 0, "k": k}
    summary["complete"] = len(records) == len(problems)
    return BenchmarkRun(name, records, summary, generated, generate_s, grade_s, resumed)
