"""Prompt data: tokenizers, chat-template rendering, dataset loading, the resumable prompt
stream, and the built-in CPU quickstart task. Layer L0 (no JAX)."""

from openrs_jax.data.iterator import PromptIterator, box_answer
from openrs_jax.data.pipeline import build_prompt_iterator
from openrs_jax.data.quickstart import build_quickstart_tokenizer, quickstart_dataset
from openrs_jax.data.sources import check_columns, filter_rows, load_source
from openrs_jax.data.tokenizer import PromptFormatter, eos_and_pad, load_tokenizer
from openrs_jax.data.validation import BAD_ROW_POLICIES, DataError

__all__ = [
    "BAD_ROW_POLICIES",
    "DataError",
    "PromptFormatter",
    "PromptIterator",
    "box_answer",
    "build_prompt_iterator",
    "build_quickstart_tokenizer",
    "check_columns",
    "eos_and_pad",
    "filter_rows",
    "load_source",
    "load_tokenizer",
    "quickstart_dataset",
]
