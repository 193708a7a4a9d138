"""What one organisation's node needs: `node.toml` (where the chain, contract, store and run config are,
which data it holds, where its key is), its signing key, and its per-round state file.

A key never travels in clear through the config or the command line: `key_file` (a file only its owner
can read, like an ssh key) or `key_env` (an environment variable). The state file records, before each
transaction is sent, what the node is about to commit (seed secret, update blob, ballot and salt), so a
node killed at any point and restarted reveals what it committed and never commits something else.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["NodeConfig", "NodeConfigError", "NodeState", "load_key", "load_node_config"]

_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_KEY_NAMES = ("key", "private_key", "privkey", "secret_key", "mnemonic", "secret")


class NodeConfigError(ValueError):
    """node.toml, the key or the state file is unusable; the message names the file and the field."""


class NodeConfig(BaseModel):
    """`node.toml`. Relative paths are relative to the file itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rpc_url: str = Field(description="JSON-RPC URL of the chain node")
    contract: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="the Consortium contract address")
    store: str = Field(description="blob store: a directory, http(s):// blob server or fsspec URL")
    run_config: Path = Field(description="the resolved run config (model, data, lora, defence, chain)")
    participant_index: int = Field(ge=0, description="which shard of the run config's partition is ours")
    data_jsonl: Path | None = Field(None, description="our own examples instead of the built-in shard")
    key_file: Path | None = Field(None, description="file holding the hex private key (mode 0600)")
    key_env: str | None = Field(None, description="environment variable holding the hex private key")
    state_file: Path | None = Field(None, description="per-round state; default: beside node.toml")
    poll_seconds: float = Field(0.5, gt=0, le=60, description="how often the chain is polled")
    store_budget_s: float = Field(
        20.0,
        gt=0,
        le=3600,
        description="an HTTP store call, retries included, gives up after this many seconds, so a slow "
        "store cannot keep the node retrying past a phase's window (it re-reads the chain instead)",
    )
    dev_chain: bool = Field(False, description="a local dev node (anvil): fixed fees, fewer look-ups")

    @property
    def name(self) -> str:
        return f"org{self.participant_index}"


def _refuse_clear_keys(data: dict[str, Any], path: Path) -> None:
    """A private key written in the config is refused before anything else is read."""
    for k, v in data.items():
        if k.lower() in _KEY_NAMES or (isinstance(v, str) and _HEX_KEY.match(v.strip())):
            raise NodeConfigError(
                f"{path}: `{k}` holds a key in clear; refused. Put the key in a file readable only by "
                'you (`key_file = "..."`, chmod 600) or in an environment variable (`key_env = "NAME"`)'
            )


def load_node_config(path: Path) -> NodeConfig:
    if not path.is_file():
        raise NodeConfigError(f"{path}: node config not found")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise NodeConfigError(f"{path}: invalid TOML: {e}") from None
    _refuse_clear_keys(data, path)
    try:
        cfg = NodeConfig.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        field = ".".join(str(p) for p in e["loc"]) or "config"
        what = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        raise NodeConfigError(f"{path}: {field}: {what}") from None
    if (cfg.key_file is None) == (cfg.key_env is None):
        raise NodeConfigError(f"{path}: give exactly one of key_file and key_env")
    here = path.resolve().parent

    def rel(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else here / p)

    store = cfg.store
    if "://" not in store and not Path(store).is_absolute():
        store = str(here / store)
    return cfg.model_copy(
        update={
            "run_config": rel(cfg.run_config),
            "data_jsonl": rel(cfg.data_jsonl),
            "key_file": rel(cfg.key_file),
            "state_file": rel(cfg.state_file) or here / f"{cfg.name}.state.json",
            "store": store,
        }
    )


def load_key(cfg: NodeConfig) -> Any:
    """The node's signing account (eth_account LocalAccount) from its key file or environment variable."""
    from eth_account import Account  # eth_account (the chain extra): only loading a key needs it

    if cfg.key_file is not None:
        where = f"key_file {cfg.key_file}"
        if not cfg.key_file.is_file():
            raise NodeConfigError(f"{where}: not found")
        mode = stat.S_IMODE(cfg.key_file.stat().st_mode)
        if mode & 0o077:
            raise NodeConfigError(
                f"{where}: readable by others (mode {mode:o}); `chmod 600 {cfg.key_file}` and start again"
            )
        text = cfg.key_file.read_text().strip()
    else:
        where = f"key_env {cfg.key_env}"
        text = os.environ.get(str(cfg.key_env), "").strip()
        if not text:
            raise NodeConfigError(f"{where}: the environment variable is not set or empty")
    if not _HEX_KEY.match(text):
        raise NodeConfigError(f"{where}: expected a 32-byte hex private key (64 hex digits, 0x optional)")
    return Account.from_key(text)


class NodeState:
    """Per-round memory of one node, written atomically (temp file, fsync, rename) before each send.

    Layout: {"contract", "address", "deployment", "rounds": {"<rid>": {"seed": hex, "seed_sent": bool,
    "blob": hex, "uri": str, "vote": {"choice", "flags", "salt"}, ...}}}. `deployment` names the chain
    and the block the contract was deployed in (`chain id:block number:block hash`): a chain restarted
    and redeployed reuses the contract address, and its rounds are not the ones this file remembers."""

    def __init__(self, path: Path, contract: str, address: str, deployment: str | None = None) -> None:
        self.path = path
        self.data: dict[str, Any] = {"contract": contract.lower(), "address": address.lower(), "rounds": {}}
        if deployment is not None:
            self.data["deployment"] = deployment.lower()
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise NodeConfigError(f"state file {path}: not valid JSON ({e}); move it away") from None
            for k in ("contract", "address"):
                if str(old.get(k, "")).lower() != self.data[k]:
                    raise NodeConfigError(
                        f"state file {path} belongs to {k} {old.get(k)}, this node is {self.data[k]}; "
                        "give this node its own state_file"
                    )
            was = old.get("deployment")
            if deployment is not None and was is not None and str(was).lower() != self.data["deployment"]:
                raise NodeConfigError(
                    f"state file {path} belongs to deployment {was} (chain id:block:hash), the contract at "
                    f"{contract} is deployment {deployment}: the chain was restarted and redeployed; "
                    "move the state file away to start afresh"
                )
            self.data = old | ({"deployment": self.data["deployment"]} if deployment is not None else {})

    def round(self, rid: int) -> dict[str, Any]:
        return self.data["rounds"].setdefault(str(rid), {})

    def update(self, rid: int, **values: Any) -> None:
        """Record and persist before acting on it."""
        self.round(rid).update(values)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # it holds unrevealed seeds and salts
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
