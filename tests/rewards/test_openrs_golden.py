"""Our rewards against Open-RS's own reward code, case for case (tests/golden/, see
make_reward_golden.py): same math-verify version, same values, floats bit for bit.

The golden file is the one for the installed math-verify (0.5.2, Open-RS's and our pin; 0.9.0
is kept too). The fast tests run a fixed sample of the corpus (every 199th case, plus cases
where the as-ran cosine contradicts accuracy and where the float order of the cosine matters);
the whole corpus (about 9,000 cases, 5-15 min on 2 cores) runs with OPENRS_GOLDEN_FULL=1.

math-verify's signal timeouts are raised to 60 s here: every golden case ran in under 0.5 s
in the reference run (slower ones are excluded there), so none reached Open-RS's 3 s limit,
and a loaded CI machine must not turn a slow parse into a different verdict.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import pathlib

import pytest

from openrs_jax.config import load_config
from openrs_jax.rewards import VerifyPool, cosine_scaled, get_reward, math_rewards

GOLDEN_DIR = pathlib.Path(__file__).parents[1] / "golden"
_spec = importlib.util.spec_from_file_location("reward_corpus", GOLDEN_DIR / "reward_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(corpus)

SLOW_TIMEOUTS = dict(parse_timeout_s=60, verify_timeout_s=60)
M = corpus.COSINE_MAX_LEN
MATH_REWARDS = ("accuracy", "cosine")


@pytest.fixture(scope="module")
def golden():
    version = importlib.metadata.version("math-verify")
    path = corpus.golden_path(version)
    if not path.is_file():
        known = sorted(p.name for p in GOLDEN_DIR.glob("openrs_rewards_math_verify_*.json"))
        pytest.fail(f"no golden rewards for math-verify {version} (pyproject.toml pins it; have {known})")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def cases(golden, shared_data):
    built = corpus.build_corpus(shared_data)
    assert corpus.corpus_sha256(built) == golden["corpus_sha256"], "corpus or benchmark files changed"
    return built


@pytest.fixture(scope="module")
def pool():
    with VerifyPool(
        2, 300.0, preload=("math_verify", "latex2sympy2_extended"), initializer=math_rewards.warm_up
    ) as p:
        yield p


def _recipe_rewards(pool):
    """accuracy as openrs2 configures it, cosine as openrs3 and openrs3_intended do."""
    kwargs = {
        name: dict(load_config(recipe).rewards.reward_kwargs.get(reward, {}), pool=pool, **SLOW_TIMEOUTS)
        for name, recipe, reward in [
            ("accuracy", "openrs2", "accuracy"),
            ("cosine", "openrs3", "cosine"),
            ("cosine_intended", "openrs3_intended", "cosine"),
        ]
    }
    assert kwargs["cosine"]["boxed"] == "none" and kwargs["cosine_intended"]["boxed"] == "all"
    return {
        "accuracy": get_reward("accuracy", **kwargs["accuracy"]),
        "cosine": get_reward("cosine", **kwargs["cosine"]),
        "cosine_intended": get_reward("cosine", **kwargs["cosine_intended"]),
    }


def _float_order_matters(length: int) -> bool:
    return math.cos(math.pi * length / M) != math.cos((length / M) * math.pi)


def _sample(cases, golden) -> list[int]:
    """Every 199th case, plus the first 8 where the as-ran cosine's verdict contradicts
    accuracy and the first 8 whose cosine depends on the float order."""
    values = golden["values"]
    kept = [i for i in range(len(cases)) if values["accuracy"][i] is not None]
    picked = {i for i in kept if i % 199 == 0}
    contradicting = [
        i for i in kept
        if values["cosine"][i] != 1.0 and (values["cosine"][i] >= 0.5) != (values["accuracy"][i] == 1.0)
    ]
    ordered = [i for i in kept if _float_order_matters(len(cases[i]["completion"]))]
    assert len(contradicting) >= 8 and len(ordered) >= 8
    return sorted(picked | set(contradicting[:8]) | set(ordered[:8]))


def _check(indices, cases, golden, pool):
    texts = [cases[i]["completion"] for i in indices]
    golds = [cases[i]["gold"] for i in indices]
    fns = _recipe_rewards(pool)
    ours = {name: fn(texts, solution=golds) for name, fn in fns.items()}
    values = golden["values"]
    for name in MATH_REWARDS:
        diff = [(cases[i]["name"], values[name][i], got) for i, got in zip(indices, ours[name])
                if got != values[name][i]]
        assert not diff, f"{name}: {len(diff)} of {len(indices)} differ from Open-RS, e.g. {diff[:5]}"
    # The intended cosine ("all") is Open-RS's cosine formula on Open-RS's accuracy verdict
    # (the gold that does not parse gives 1.0 in both rewards).
    for i, got in zip(indices, ours["cosine_intended"]):
        no_gold = values["cosine"][i] == 1.0 and values["accuracy"][i] == 1.0
        want = 1.0 if no_gold else cosine_scaled(len(cases[i]["completion"]), values["accuracy"][i] == 1.0, M)
        assert got == want, (cases[i]["name"], got, want)


def test_text_rewards_equal_openrs_on_the_whole_corpus(cases, golden):
    texts = [c["completion"] for c in cases]
    fns = {"format": get_reward("format"),
           "repetition_penalty": get_reward("repetition_penalty", **golden["kwargs"]["repetition_penalty"])}
    for name, fn in fns.items():
        want = golden["values"][name]
        diff = [(c["name"], w, g) for c, w, g in zip(cases, want, fn(texts)) if w is not None and g != w]
        assert not diff, f"{name}: {len(diff)} differ, e.g. {diff[:5]}"


def test_cosine_defaults_are_openrs_exp3(golden):
    # Open-RS's grpo.py script defaults, with exp 3's --cosine_max_len 3584.
    from openrs_jax.rewards import reward_params

    params = reward_params("cosine")
    assert {k: params[k] for k in golden["kwargs"]["cosine"]} == golden["kwargs"]["cosine"]


def test_math_rewards_equal_openrs_on_a_sample(cases, golden, pool):
    _check(_sample(cases, golden), cases, golden, pool)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("OPENRS_GOLDEN_FULL"), reason="set OPENRS_GOLDEN_FULL=1 (5-15 min)")
def test_math_rewards_equal_openrs_on_the_whole_corpus(cases, golden, pool):
    _check([i for i in range(len(cases)) if golden["values"]["accuracy"][i] is not None], cases, golden, pool)
