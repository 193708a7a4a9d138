"""Chat formatting and tokenisation: one template call shared by training and generation.

How an example becomes tokens:
  prompt_text = chat template of [user: prompt] with add_generation_prompt=True (exactly what generation
                sees; no system prompt is added here, though a template such as SmolLM2's may inject its
                default one, which is fine because both paths use the same call)
  target_text = response + tokenizer.eos_token (for ChatML, "<|im_end|>": the model learns to stop)
  input_ids   = encode(prompt_text) + encode(target_text), each with add_special_tokens=False
  labels      = -100 for the prompt part, the token ids for the target part (loss on the answer only)

Why two encodes instead of one over the joined text: the prompt's tokens are then bit-identical to what
`encode_prompt` feeds the model at evaluation time, and the prompt/target boundary is exact by construction
(a joint encode can merge characters across the boundary and blur which tokens are targets).
add_special_tokens=False because the template already writes any BOS it wants. As a guard we check that
prompt_text + target_text is a prefix of the template's own rendering of the full conversation, so a
template that formats assistant turns differently is reported instead of silently trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from consortium.data.errors import DataError
from consortium.data.example import Example

if TYPE_CHECKING:  # importing transformers costs seconds; only the type is needed here
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100


@dataclass(frozen=True)
class EncodedExample:
    """Token ids and per-token targets (IGNORE_INDEX where no loss is taken), the same length."""

    input_ids: list[int]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.labels):
            raise ValueError(
                f"input_ids ({len(self.input_ids)}) and labels ({len(self.labels)}) differ in length"
            )


def _messages(prompt: str, system: str | None) -> list[dict[str, str]]:
    head = [] if system is None else [{"role": "system", "content": system}]
    return [*head, {"role": "user", "content": prompt}]


def prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str, system: str | None = None) -> str:
    """The templated prompt up to and including the assistant header.

    `system=None` leaves the template's own default (SmolLM2 injects a ~20-token one); a short explicit
    system message makes every sequence shorter, which on a CPU is most of the cost of a short answer.
    """
    return tokenizer.apply_chat_template(
        _messages(prompt, system), tokenize=False, add_generation_prompt=True
    )


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str, system: str | None = None) -> list[int]:
    """Token ids to generate the answer from (the same prefix `encode_example` trains on)."""
    return _encode(tokenizer, prompt_text(tokenizer, prompt, system))


def encode_example(
    tokenizer: PreTrainedTokenizerBase, ex: Example, max_len: int, system: str | None = None
) -> EncodedExample:
    """Prompt and answer as one sequence, loss on the answer and end-of-turn token only.

    If too long, tokens are dropped from the LEFT of the prompt (the question's end and the assistant header
    survive); the response is never cut. Raises DataError if the response alone leaves no room for a prompt.
    """
    if tokenizer.eos_token is None:
        raise DataError("tokenizer has no eos_token; cannot mark the end of the answer")
    if max_len < 2:
        raise DataError(f"max_len must be >= 2, got {max_len}")
    p_text = prompt_text(tokenizer, ex.prompt, system)
    t_text = ex.response + tokenizer.eos_token
    full = tokenizer.apply_chat_template(
        [*_messages(ex.prompt, system), {"role": "assistant", "content": ex.response}],
        tokenize=False,
    )
    if not full.startswith(p_text + t_text):
        raise DataError(
            f"the chat template does not render an assistant turn as <generation prompt> + response + "
            f"{tokenizer.eos_token!r}; this tokenizer's template is not supported (domain {ex.domain!r})"
        )
    prompt_ids = _encode(tokenizer, p_text)
    target_ids = _encode(tokenizer, t_text)
    if len(target_ids) >= max_len:
        raise DataError(
            f"response of a {ex.domain!r} example needs {len(target_ids)} tokens (with end-of-turn), "
            f"leaving no room for the prompt within max_len={max_len}: {ex.response[:40]!r}"
        )
    overflow = len(prompt_ids) + len(target_ids) - max_len
    if overflow > 0:
        prompt_ids = prompt_ids[overflow:]
    return EncodedExample(
        input_ids=prompt_ids + target_ids, labels=[IGNORE_INDEX] * len(prompt_ids) + target_ids
    )
