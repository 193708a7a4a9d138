"""Training and evaluation import without the chain packages: a GPU box needs only torch, transformers,
peft and safetensors (plus our own data/model modules)."""

import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = ("web3", "vyper", "eth_", "eth", "pydantic", "consortium.chain", "consortium.config",
               "consortium.protocol", "consortium.chain_sim", "consortium.sim")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if any(name == b or name.startswith(b if b.endswith("_") else b + ".") for b in BLOCKED):
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


def test_train_evaluate_model_import_without_chain_packages() -> None:
    done = _run(
        """
        import consortium.train, consortium.train_fast, consortium.packing, consortium.evaluate
        import consortium.model
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("web3", "vyper", "pydantic")
                     or m.startswith(("eth_", "consortium.chain", "consortium.config")))
        assert not bad, bad
        print("ok")
        """
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_blocker_really_blocks() -> None:
    """The finder above must be able to fail the test: importing the config module is refused."""
    done = _run("import consortium.config")
    assert done.returncode != 0 and "blocked in this test" in done.stderr
