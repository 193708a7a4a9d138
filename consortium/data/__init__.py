"""Data for Consortium: a built-in multi-domain task corpus, user data loaders, partitioning among
participants, and chat formatting/tokenisation with loss on the answer only."""

from consortium.data.corpus import Corpus, build_corpus
from consortium.data.domains import DOMAINS, register_domain
from consortium.data.errors import DataError
from consortium.data.example import Example
from consortium.data.loaders import load_hf_disk, load_jsonl
from consortium.data.partition import SCHEMES, partition
from consortium.data.tokenize import IGNORE_INDEX, EncodedExample, encode_example, encode_prompt

__all__ = [
    "DOMAINS",
    "IGNORE_INDEX",
    "SCHEMES",
    "Corpus",
    "DataError",
    "EncodedExample",
    "Example",
    "build_corpus",
    "encode_example",
    "encode_prompt",
    "load_hf_disk",
    "load_jsonl",
    "partition",
    "register_domain",
]
