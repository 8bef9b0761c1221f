"""The chunked, resumable runner, validation and best-checkpoint tracking, with a scripted
engine (no model): its answers are known, so scores are exact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openrs_jax.eval import benchmarks as bm
from openrs_jax.eval.runner import EvalSettings, RecordStore, chunk_seed, evaluate_benchmark
from openrs_jax.eval.validation import BestCheckpointTracker, Validator
from openrs_jax.rewards import VerifyPool
from openrs_jax.rollout.base import RolloutEngine, pack_completions


class ScriptedEngine(RolloutEngine):
    """Answers `\\boxed{gold}` or `\\boxed{gold}1` (wrong) per row. Like the real engines, a
    row's randomness depends only on the call's seed and the row's position in the call, so
    a chunk generated again gives the same rows. `always_right(key)` forces correct; with
    `coin=False` every other row is wrong."""

    def __init__(self, tokenizer, golds_by_prompt, always_right=lambda key: False, coin=True):
        self.tokenizer = tokenizer
        self.golds = golds_by_prompt  # tuple(prompt ids) -> (key, gold answer text)
        self.always_right = always_right
        self.coin = coin
        self.calls = []

    def generate(self, prompt_token_ids, num_generations, sampling):
        self.calls.append((len(prompt_token_ids), sampling.seed))
        ids, lps, reasons = [], [], []
        for p, prompt in enumerate(prompt_token_ids):
            index, answer = self.golds[tuple(prompt)]
            for j in range(num_generations):
                row = p * num_generations + j
                flip = self.coin and np.random.default_rng([sampling.seed, row]).random() < 0.5
                right = self.always_right(index) or flip
                text = f"Therefore, the final answer is: $\\boxed{{{answer if right else answer + '1'}}}$."
                tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
                ids.append(tokens)
                lps.append([0.0] * len(tokens))
                reasons.append("stop")
        return pack_completions(ids, lps, reasons, prompt_token_ids, num_generations,
                                self.tokenizer.pad_token_id, [self.tokenizer.eos_token_id])

    def update_weights(self, params):
        pass


@pytest.fixture(scope="module")
def amc(shared_data):
    return bm.load_benchmark("amc23", shared_data, limit=10)


def _engine(tok, problems, settings, **kw):
    from openrs_jax.eval.runner import make_formatter

    fmt = make_formatter(tok, settings)
    golds = {tuple(fmt.encode(p.query)[0]): (p.index, p.gold) for p in problems}
    return ScriptedEngine(tok, golds, **kw)


SETTINGS = EvalSettings(samples=3, max_new_tokens=64, seed=5, chunk_size=4)


def test_records_and_scores(amc, byte_tok, tmp_path):
    engine = _engine(byte_tok, amc, SETTINGS, always_right=lambda i: i < 5)
    store = RecordStore(tmp_path / "amc23.jsonl", 3)
    run = evaluate_benchmark(amc, engine, byte_tok, SETTINGS, VerifyPool(0), store)
    assert [n for n, _ in engine.calls] == [4, 4, 2]  # chunks of 4 problems
    assert [s for _, s in engine.calls] == [chunk_seed(5, "amc23", c) for c in range(3)]
    lines = [json.loads(x) for x in (tmp_path / "amc23.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(10))
    first = lines[0]
    assert first["prompt"].startswith("<｜begin▁of▁sentence｜><｜User｜>Solve the following math problem")
    assert first["prompt"].endswith("<｜Assistant｜><think>\n")
    assert first["gold"] == amc[0].gold and first["extracted"] == [amc[0].gold] * 3
    assert first["correct"] == [True] * 3 and first["finish_reasons"] == ["stop"] * 3
    assert first["completions"][0] == f"Therefore, the final answer is: $\\boxed{{{amc[0].gold}}}$."
    correct = np.array([r["correct"] for r in lines])
    assert correct[:5].all()
    s = run.summary
    assert s["pass@1"] == pytest.approx(correct[:, 0].mean())
    assert s["avg@k"] == pytest.approx(correct.mean())
    assert 0.5 < s["avg@k"] < 1.0  # the scripted coin flips for problems 5..9
    assert s["complete"] and run.resumed == 0


def test_resume_after_kill_and_torn_line_equals_uninterrupted(amc, byte_tok, tmp_path):
    full = RecordStore(tmp_path / "full.jsonl", 3)
    evaluate_benchmark(amc, _engine(byte_tok, amc, SETTINGS), byte_tok, SETTINGS, VerifyPool(0), full)

    part = RecordStore(tmp_path / "part.jsonl", 3)
    run = evaluate_benchmark(amc, _engine(byte_tok, amc, SETTINGS), byte_tok, SETTINGS, VerifyPool(0), part,
                             max_chunks=2)
    assert not run.summary["complete"] and run.summary["n"] == 8
    # A kill in the middle of chunk 3's write: half a line at the end.
    lines = part.path.read_text().splitlines(keepends=True)
    part.path.write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    engine = _engine(byte_tok, amc, SETTINGS)
    logs = []
    run = evaluate_benchmark(amc, engine, byte_tok, SETTINGS, VerifyPool(0), part, log=logs.append)
    assert part.dropped == 1 and any("dropped 1 torn" in m for m in logs)
    assert run.resumed == 6 and run.summary["complete"]
    # Chunk 2 (problems 4..7; 6 and 7 missing) is generated again whole, chunk 3 once.
    assert engine.calls == [(4, chunk_seed(5, "amc23", 1)), (2, chunk_seed(5, "amc23", 2))]
    assert part.path.read_text() == full.path.read_text()


def test_record_store_drops_other_sample_counts(tmp_path):
    path = tmp_path / "r.jsonl"
    good = {"index": 0, "id": "a", "correct": [True, False]}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"index": 1, "correct": [True]}) + "\n"
                    + json.dumps(good) + "\n")
    store = RecordStore(path, 2)
    assert store.load() == {0: good} and store.dropped == 2
    assert path.read_text() == json.dumps(good) + "\n"  # rewritten clean


def test_changed_data_is_refused(amc, byte_tok, tmp_path):
    store = RecordStore(tmp_path / "amc23.jsonl", 1)
    store.append([{"index": 0, "id": "other", "correct": [True]}])
    with pytest.raises(ValueError, match="the data changed"):
        evaluate_benchmark(amc, _engine(byte_tok, amc, SETTINGS), byte_tok, EvalSettings(samples=1), VerifyPool(0),
                           store)


def test_validator_scores(shared_data, byte_tok):
    settings = EvalSettings(samples=2, max_new_tokens=64, chunk_size=8)
    problems = {n: bm.load_benchmark(n, shared_data, limit=4) for n in ("aime24", "amc23")}
    everything = problems["aime24"] + problems["amc23"]
    right = {("aime24", 0), ("aime24", 1), ("amc23", 0), ("amc23", 1), ("amc23", 2), ("amc23", 3)}
    from openrs_jax.eval.runner import make_formatter

    fmt = make_formatter(byte_tok, settings)
    golds = {tuple(fmt.encode(p.query)[0]): ((p.benchmark, p.index), p.gold) for p in everything}
    engine = ScriptedEngine(byte_tok, golds, always_right=lambda key: key in right, coin=False)
    validator = Validator(problems, byte_tok, settings, metric="avg@k", pool=VerifyPool(0))
    result = validator.evaluate(engine, step=50)
    assert result["per_benchmark"]["aime24"]["avg@k"] == 0.5
    assert result["per_benchmark"]["amc23"]["avg@k"] == 1.0
    assert result["score"] == 0.75 and result["step"] == 50
    assert result["metrics"]["val/score"] == 0.75
    assert result["metrics"]["val/aime24/pass@1"] == 0.5
    with pytest.raises(ValueError, match="metric"):
        Validator(problems, byte_tok, settings, metric="acc", pool=VerifyPool(0))


def test_best_checkpoint_tracker(tmp_path):
    for step in (50, 100, 150):
        (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
    tracker = BestCheckpointTracker(tmp_path, metric="score", mode="max")
    assert tracker.update(50, {"score": 0.40}) is True
    assert tracker.update(100, {"score": 0.45}) is True
    assert tracker.update(150, {"score": 0.41}) is False
    assert tracker.update(200, {"score": float("nan")}) is False
    state = json.loads((tmp_path / "best_checkpoint.json").read_text())
    assert (state["best_step"], state["best_value"]) == (100, 0.45)
    assert [h["step"] for h in state["history"]] == [50, 100, 150, 200]
    link = tmp_path / "best"
    assert link.is_symlink() and str(link.readlink()) == "checkpoints/100"
    assert link.resolve() == (tmp_path / "checkpoints" / "100").resolve()
    assert state["best_path"] == str(tmp_path / "checkpoints" / "100")
    # A resumed run reads its best back; ties keep the earlier step.
    again = BestCheckpointTracker(tmp_path, metric="score", mode="max")
    assert again.best_step == 100 and again.update(250, {"score": 0.45}) is False
    with pytest.raises(ValueError, match="tracks 'score'"):
        BestCheckpointTracker(tmp_path, metric="loss", mode="min")
    with pytest.raises(KeyError, match="no 'score'"):
        again.update(300, {"val/score": 1.0})
    low = BestCheckpointTracker(tmp_path / "min", metric="loss", mode="min")
    assert low.update(1, {"loss": 2.0}) and low.update(2, {"loss": 1.0}) and not low.update(3, {"loss": 1.5})
    assert low.best_step == 2


def test_problem_indices_must_be_distinct(amc, byte_tok):
    twice = [amc[0], amc[0]]
    with pytest.raises(ValueError, match="distinct"):
        evaluate_benchmark(twice, _engine(byte_tok, amc, SETTINGS), byte_tok, SETTINGS, VerifyPool(0))


def test_lighteval_tokens_add_the_second_bos_as_lighteval_did(amc, shared_data, tmp_path):
    """Open-RS's lighteval runs encoded the R1-distill template text with special tokens added:
    the tokenizer's BOS in front of the template's own. `add_special_tokens` reproduces that;
    the default feeds the template text as is (one BOS)."""
    from openrs_jax.data import load_tokenizer
    from openrs_jax.eval.runner import make_formatter

    tok = load_tokenizer(shared_data / "tokenizer-qwen2")
    bos = tok.bos_token_id
    problem = amc[0]
    plain = make_formatter(tok, EvalSettings())
    lighteval = make_formatter(tok, EvalSettings(add_special_tokens=True))
    ids, text = plain.encode(problem.query)
    ids2, text2 = lighteval.encode(problem.query)
    assert text == text2 and text.startswith("<｜begin▁of▁sentence｜><｜User｜>Solve the following")
    assert ids[:2] == [bos, tok.convert_tokens_to_ids("<｜User｜>")]
    assert ids2 == [bos] + ids  # exactly lighteval's tokens: tokenizer(text)["input_ids"]
    assert ids2 == tok(text)["input_ids"]
    settings = EvalSettings(samples=1, max_new_tokens=8, chunk_size=4, add_special_tokens=True)
    engine = _engine(tok, amc[:2], settings, always_right=lambda key: True)
    run = evaluate_benchmark(amc[:2], engine, tok, settings, VerifyPool(0))
    assert run.summary["pass@1"] == 1.0  # the engine saw the double-BOS prompts it was scripted for


def test_progress_bar_follows_the_engine(amc, byte_tok, tmp_path):
    import io

    settings = EvalSettings(samples=2, max_new_tokens=16, seed=5, chunk_size=4)
    engine = _engine(byte_tok, amc, settings, always_right=lambda key: True)
    seen = []
    generate = engine.generate

    def reporting(prompts, g, sampling):  # an engine that reports its rows, as the JAX sampler does
        total = len(prompts) * g
        for done in (total // 2, total):
            engine.progress(done, total)
            seen.append(done)
        return generate(prompts, g, sampling)

    engine.generate = reporting
    out = io.StringIO()
    evaluate_benchmark(amc, engine, byte_tok, settings, VerifyPool(0), progress_stream=out)
    lines = out.getvalue().splitlines()
    assert seen == [4, 8, 4, 8, 2, 4]  # 10 problems in chunks of 4, 4, 2; 2 samples each
    assert lines[-1].startswith("eval amc23: 20/20 [") and lines[-1].endswith("20 correct]")
    assert engine.progress is None  # the hook is removed after each call
