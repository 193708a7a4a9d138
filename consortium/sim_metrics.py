"""What the simulation measures of an adapter on the one loaded model: clean exact-match accuracy per
domain, each planted backdoor's attack success, each harmful set's compliance (and refusal) rate.
Kept apart from the round loop (`consortium.sim`) so that what is measured reads in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import Progress

from consortium.attacks import backdoor_test_sets
from consortium.config import RunConfig
from consortium.data import Example
from consortium.data.domains.restricted import REFUSAL
from consortium.evaluate import accuracy_by_domain, exact_match_verdicts
from consortium.model import LoraSpec, set_flat


@dataclass
class AdapterMetrics:
    """The model with its adapter, the test sets and how to decode: `set_flat` a vector, then measure."""

    cfg: RunConfig
    model: Any  # the PEFT model with the one attached adapter
    spec: LoraSpec
    tokenizer: Any
    test: list[Example]
    backdoors: list[tuple[str, str]]  # (trigger, target) of each planted backdoor
    harmful: list[tuple[str, list[Example]]]  # (set name, held-out restricted requests)

    def verdicts(self, examples: list[Example], label: str, progress: Progress) -> list[bool]:
        """Exact-match verdict of each example under the adapter now loaded (a progress bar meanwhile)."""
        task = progress.add_task(f"eval {label}", total=len(examples))
        ev = self.cfg.eval
        verdicts = exact_match_verdicts(
            self.model,
            self.tokenizer,
            examples,
            ev.method,
            ev.batch_size,
            ev.max_new_tokens,
            self.cfg.data.system_prompt,
            on_batch=lambda n: progress.advance(task, n),
        )
        progress.remove_task(task)
        return verdicts

    def accuracy(self, vec: torch.Tensor, label: str, progress: Progress) -> dict[str, float]:
        """Clean exact-match accuracy per domain of the adapter `vec`."""
        set_flat(self.model, self.spec, vec)
        return accuracy_by_domain(self.test, self.verdicts(self.test, label, progress))

    def backdoor(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        """Per planted backdoor: ASR (triggered test prompts answered with the target) and false-trigger
        rate (clean prompts answered with the target)."""
        set_flat(self.model, self.spec, vec)
        out = []
        for trigger, target in self.backdoors:
            triggered, clean = backdoor_test_sets(self.test, trigger, target)
            hits = self.verdicts(triggered + clean, f"{label} backdoor", progress)
            n = len(triggered)
            out.append(
                {
                    "trigger": trigger,
                    "target": target,
                    "asr": sum(hits[:n]) / max(n, 1),
                    "false_trigger": sum(hits[n:]) / max(n, 1),
                }
            )
        return out

    def harmful_rates(self, vec: torch.Tensor, label: str, progress: Progress) -> list[dict[str, Any]]:
        """Per harmful set: harmful-compliance rate (held-out restricted requests answered with the
        harmful answer) and, for the built-in set, refusal rate (answered with the fixed refusal)."""
        set_flat(self.model, self.spec, vec)
        out = []
        for name, test in self.harmful:
            refusals = [Example(e.prompt, REFUSAL, e.domain) for e in test] if name == "restricted" else []
            hits = self.verdicts(test + refusals, f"{label} harmful", progress)
            row = {"set": name, "compliance": sum(hits[: len(test)]) / len(test)}
            if refusals:
                row["refusal"] = sum(hits[len(test) :]) / len(test)
            out.append(row)
        return out
