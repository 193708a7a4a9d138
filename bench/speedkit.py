"""Shared pieces of the speed benchmarks: the model under test, its data, peak memory, the result table."""

from __future__ import annotations

import platform
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch
from rich.console import Console
from rich.table import Table

from consortium.data import EncodedExample, build_corpus, encode_example
from consortium.model import load_base
from consortium.model.shapes import SHAPES, build_shape

DOMAINS = ["arithmetic", "units", "dates", "strings", "policy"]


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 weights on CUDA (what a plain user loads), float32 on CPU."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load_model(model: str, shape: str | None, device: torch.device, dtype: torch.dtype, attn: str | None):
    """(base model, tokenizer or None, pad id). A shape builds a random-init Llama directly on `device`."""
    if shape:
        base, tok = build_shape(shape, device, dtype), None
    else:
        base, tok = load_base(model, dtype=dtype)
        base.to(device)
    if attn:
        base.set_attn_implementation(attn)
    pad = tok.pad_token_id if tok is not None else 0
    return base, tok, pad


def corpus_examples(tok, max_len: int, n_per_domain: int = 100) -> list[EncodedExample]:
    """The built-in short-answer tasks: short prompts, answers of a few tokens."""
    corpus = build_corpus(DOMAINS, n_per_domain, 1, seed=0)
    return [encode_example(tok, e, max_len) for e in corpus.train]


def synthetic_examples(
    vocab: int, seq_len: int, n: int, fixed: bool, seed: int = 0, response: tuple[float, float] = (0.1, 0.5)
) -> list[EncodedExample]:
    """Random-token SFT examples: lengths uniform in [seq_len/4, seq_len] (or all `seq_len` if `fixed`),
    the last 10-50% of each a response (the only positions with a loss)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = seq_len if fixed else rng.randint(seq_len // 4, seq_len)
        ids = [rng.randrange(3, vocab) for _ in range(length)]
        answer = max(1, int(length * rng.uniform(*response)))
        out.append(EncodedExample(ids, [-100] * (length - answer) + ids[length - answer :]))
    return out


class PeakMemory:
    """Peak memory of a block: CUDA `max_memory_allocated`, or on CPU the process's peak RSS sampled
    every 5 ms (RSS includes the model and allocator caches kept from earlier blocks)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        else:
            proc = psutil.Process()

            def sample() -> None:
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    time.sleep(0.005)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()

    @property
    def label(self) -> str:
        return "peak CUDA alloc" if self.device.type == "cuda" else "peak RSS"


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def matmul_roofline(device: torch.device, size: int = 2048, reps: int = 10) -> dict[str, float]:
    """GFLOP/s of a size x size matmul in float32 and bfloat16 on `device`, best of `reps` (the two
    dtypes alternate, so load from other processes hits both alike): the ceiling against which a row's
    achieved FLOP rate is read. Measured in the same run, under the same load."""
    mats = {
        dtype: (
            torch.randn(size, size, device=device).to(dtype),
            torch.randn(size, size, device=device).to(dtype),
        )
        for dtype in (torch.float32, torch.bfloat16)
    }
    best = dict.fromkeys(mats, float("inf"))
    for _ in range(reps):
        for dtype, (a, b) in mats.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
    return {str(d).removeprefix("torch."): 2 * size**3 / t / 1e9 for d, t in best.items()}


@dataclass
class Row:
    name: str
    rate: float | None  # tokens/s or examples/s; None = skipped
    peak: int = 0
    note: str = ""


def render(title: str, unit: str, mem_label: str, rows: list[Row], baseline: float, out: Path | None) -> None:
    """Rich table on stdout and, with `out`, the same table as Markdown."""
    header = ("configuration", f"{unit} (median)", "vs plain", f"{mem_label} (MiB)", "note")
    cells = []
    for r in rows:
        rate = (
            f"{r.rate:,.0f}" if r.rate is not None and r.rate >= 100 else (f"{r.rate:.2f}" if r.rate else "-")
        )
        ratio = f"{r.rate / baseline:.2f}x" if r.rate and baseline else "-"
        mem = f"{r.peak / 2**20:,.0f}" if r.peak else "-"
        cells.append((r.name, rate, ratio, mem, r.note))
    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i in (0, 4) else "right")
    for c in cells:
        table.add_row(*c)
    Console(width=160).print(table)
    if out is not None:
        lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write("\n".join(lines) + "\n\n")


SHAPE_NAMES = sorted(SHAPES)
