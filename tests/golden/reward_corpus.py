r"""The reward test corpus: (completion, gold) cases built from the five benchmark files.

Standard library only: `make_reward_golden.py` imports it inside a throwaway venv that holds
Open-RS's pinned math-verify and nothing of ours, and the tests import it to rebuild the same
cases. Deterministic: no randomness, no dict-order or hash dependence; every case has a
stable name `<benchmark>/<row>/<kind>`.

Kinds, per benchmark row (answer = the row's `answer`, solution = its `solution`):
- `self`: the solution scored against itself (rows with a solution). The case that shows
  Open-RS's cosine parse (`boxed=True`) disagreeing with its accuracy parse.
- `right_boxed`: a short think block, "\n</think>\n", then `$\boxed{answer}$`.
- `wrong_boxed`: the same with the next row's answer (another problem of the benchmark).
- `right_unboxed`: the answer in `$...$` (even rows) or as bare text (odd rows), no box.
- `no_think`: the right boxed answer with no closing think tag (even rows) or the tag twice
  (odd rows), so `format` is 0.
- `long`: right (even rows) or wrong (odd rows) boxed answer after a think block padded to a
  length spread over 0..2.6 x 3584 characters, so the cosine goes through its whole cycle
  (and past M, where Open-RS does not clamp).

Golds alternate by row between the dataset `solution` (as Open-RS's training data gives it)
and `$\boxed{answer}$` (our `data.box_solution`, for answer-only data); rows without a
solution always use the boxed answer.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

BENCHMARKS = ("aime24", "amc23", "math500", "minerva", "olympiadbench")
KINDS = ("self", "right_boxed", "wrong_boxed", "right_unboxed", "no_think", "long")
COSINE_MAX_LEN = 3584  # Open-RS exp 3 (`--cosine_max_len 3584`)

_FILLER = (
    "Let me double-check that step. We compute the quantity again, carefully, and compare "
    "it with the previous value; the two agree, so we move on. "
)


def _rows(data_dir: pathlib.Path, name: str) -> list[dict]:
    with open(data_dir / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _think(problem: str) -> str:
    # The completion starts inside the think block (the prompt ends with "<think>\n").
    return f"Okay, let me solve this. {problem.strip()[:400]}\nI will work it out step by step."


def _padded(head: str, tail: str, target: int) -> str:
    """head + filler + tail, exactly `target` characters when target allows it."""
    room = target - len(head) - len(tail)
    if room <= 0:
        return head + tail
    filler = (_FILLER * (room // len(_FILLER) + 1))[:room]
    return head + filler + tail


def _long_target(index: int) -> int:
    # A deterministic spread over [0, 2.6 M): Knuth's multiplicative hash of the case index.
    return (index * 2654435761) % int(2.6 * COSINE_MAX_LEN)


def build_corpus(data_dir: str | pathlib.Path) -> list[dict]:
    """All cases, in a fixed order: dicts with `name`, `completion`, `gold`."""
    data_dir = pathlib.Path(data_dir)
    cases: list[dict] = []
    for bench in BENCHMARKS:
        rows = _rows(data_dir, bench)
        for i, row in enumerate(rows):
            answer = row["answer"].strip()
            other = rows[(i + 1) % len(rows)]["answer"].strip()
            solution = row.get("solution")
            boxed_gold = f"$\\boxed{{{answer}}}$"
            gold = solution if (solution and i % 2 == 0) else boxed_gold
            gold_other = solution if (solution and i % 2 == 1) else boxed_gold
            think = _think(row["problem"])
            name = f"{bench}/{i}"

            def add(kind: str, completion: str, g: str) -> None:
                cases.append({"name": f"{name}/{kind}", "completion": completion, "gold": g})

            if solution:
                add("self", solution, solution)
            add("right_boxed", f"{think}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$.", gold)
            add("wrong_boxed", f"{think}\n</think>\n\nThe final answer is $\\boxed{{{other}}}$.", gold_other)
            if i % 2 == 0:
                unboxed = f"{think}\n</think>\n\nThe final answer is ${answer}$."
            else:
                unboxed = f"{think}\n</think>\n\nThe final answer is {answer}."
            add("right_unboxed", unboxed, boxed_gold)
            if i % 2 == 0:
                no_think = f"{think}\nThe final answer is $\\boxed{{{answer}}}$."
            else:
                no_think = f"{think}\n</think>\n\nWait.\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."
            add("no_think", no_think, gold)
            shown = answer if i % 2 == 0 else other
            tail = f"\n</think>\n\nThe final answer is $\\boxed{{{shown}}}$."
            add("long", _padded(think + "\n", tail, _long_target(len(cases))), gold)
    return cases


def corpus_sha256(cases: list[dict]) -> str:
    """The identity of a corpus: sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(cases, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def golden_path(math_verify_version: str) -> pathlib.Path:
    """Where Open-RS's rewards under that math-verify version are stored."""
    return pathlib.Path(__file__).with_name(f"openrs_rewards_math_verify_{math_verify_version}.json")
