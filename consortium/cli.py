"""`consortium` command line: run, check, audit; node, chain and store for real networks; probe tools.

Each command validates its input first and fails with one line naming what was wrong (exit 2); heavy
imports (torch, web3) happen inside the commands so `--help` and `--version` stay quick."""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from rich.console import Console

from consortium import __version__
from consortium.cli_probe import probe_app
from consortium.cli_removal import removal_app
from consortium.cli_support import fail, quiet_libraries, summary
from consortium.dashboard.cli import dashboard, start_beside

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Trustless collaborative LoRA fine-tuning."
)
# the options every command that reads a run config takes, in the same words
ConfigArg = Annotated[Path | None, typer.Argument(help="TOML config (overrides the preset)")]
PresetOpt = Annotated[str, typer.Option(help="built-in preset: smoke | demo | bench")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="dotted override, e.g. --set rounds=3")]


def _version(value: bool) -> None:
    if value:
        print(f"consortium {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Consortium: several organisations fine-tune one open LLM together without trusting each other."""


@app.command()
def check(
    config: ConfigArg = None,
    preset: PresetOpt = "demo",
    set_: SetOpt = None,
) -> None:
    """Validate a config without running it: print the resolved config, its digest and what it runs."""
    # import time: pydantic and torch load for a command, not for `--help`
    from consortium.check import check_config
    from consortium.config import ConfigError, load_config, to_toml_dict
    from consortium.data import DataError
    from consortium.probe import ProbeError

    try:
        checked = check_config(load_config(config, preset, set_ or []))
    except (ConfigError, DataError, ProbeError) as e:
        fail(str(e))
    print(tomli_w.dumps(to_toml_dict(checked.config)), end="")
    print(f"\n# digest {checked.digest}")
    print(f"# {checked.summary}")
    print(f"# examples per participant: {checked.shard_sizes}")
    for warning in checked.warnings:
        print(f"# warning: {warning}")
    print("config ok")


@app.command()
def run(
    config: ConfigArg = None,
    preset: PresetOpt = "demo",
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option(help="parent directory of the run directory")] = Path("runs"),
    dashboard: Annotated[bool, typer.Option(help="serve `consortium dashboard` of this run")] = False,
    dashboard_port: Annotated[int, typer.Option(help="its port (0: any free port)")] = 8750,
) -> None:
    """Run federated LoRA fine-tuning in-process and write a run directory with a report."""
    # import time: see `check`
    from consortium.config import ConfigError, load_config
    from consortium.data import DataError

    try:
        cfg = load_config(config, preset, set_ or [])
    except ConfigError as e:
        fail(str(e))
    console = Console()
    quiet_libraries()
    # import time: the model (transformers) takes seconds
    from consortium.backend import BackendError
    from consortium.model import ModelLoadError
    from consortium.privacy import PrivacyBudgetExceeded
    from consortium.probe import ProbeError
    from consortium.sim import Simulation

    try:
        sim = Simulation(cfg, console)
    except (DataError, ModelLoadError, ProbeError, BackendError) as e:
        fail(str(e))
    linger = start_beside(out, dashboard_port) if dashboard else None
    try:
        path = sim.run(out)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except PrivacyBudgetExceeded as e:
        fail(f"{e}; the report is in {sim.path}", 3)
    summary(json.loads((path / "report.json").read_text()), console)
    console.print(f"run directory: [bold]{path}[/]")
    if linger is not None:
        linger()


@app.command()
def audit(
    run_dir: Annotated[Path | None, typer.Argument(help="run directory to audit")] = None,
    rpc_url: Annotated[str | None, typer.Option(help="audit a live network instead: JSON-RPC URL")] = None,
    contract: Annotated[
        str | None, typer.Option(help="with --rpc-url: the Consortium contract address")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="with --rpc-url: blob store: directory, http(s):// or fsspec URL")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="with --rpc-url: the run's config.toml")] = None,
) -> None:
    """Recompute a run from public records (chain, store, config) and report every mismatch.

    Exit 0 when everything verifies, 1 when something does not match, 2 when the audit cannot start."""
    # import time: torch and pydantic (web3 only with --rpc-url)
    from consortium.audit import AuditInputError, audit_live, audit_run
    from consortium.node.build import genesis_digest  # the deployed genesis against the config's
    from consortium.removal.verify import audit_removal, is_removal

    console = Console()
    try:
        if rpc_url is not None:
            if run_dir is not None or contract is None or store is None or config is None:
                fail("--rpc-url needs --contract, --store and --config, and no RUN_DIR")
            result = audit_live(rpc_url, str(contract), store, Path(str(config)), genesis_digest)
        elif run_dir is None:
            fail("give a RUN_DIR, or --rpc-url with --contract, --store and --config")
        elif is_removal(run_dir):  # a directory written by `consortium remove`
            result = audit_removal(run_dir)
        else:
            result = audit_run(run_dir, genesis_digest)
    except AuditInputError as e:
        fail(str(e))
    checked = ", ".join(f"{n} {what}" for what, n in result.checked.items())
    if result.ok:
        console.print(f"[bold green]audit passed[/]: {checked}", highlight=False, soft_wrap=True)
        return
    for p in result.problems:
        console.print(f"[red]mismatch[/] {p}", highlight=False, soft_wrap=True)
    console.print(
        f"[bold red]audit FAILED[/]: {len(result.problems)} mismatch(es); checked {checked}", highlight=False
    )
    raise typer.Exit(1)


@app.command()
def remove(
    run_dir: Annotated[Path, typer.Argument(help="the original run directory (only read)")],
    participant: Annotated[list[str], typer.Option(help="participant to remove (repeatable)")],
    method: Annotated[str, typer.Option(help="exact | recover | subtract")],
    from_round: Annotated[int | None, typer.Option(help="first round without it (default: its 1st)")] = None,
    exact_rounds: Annotated[
        int | None, typer.Option(help="recover: exact last rounds (default max(1, 0.3 x replayed))")
    ] = None,
    correct_every: Annotated[
        int | None, typer.Option(help="recover: also every T-th middle round exact (default off)")
    ] = None,
    warmup_rounds: Annotated[
        int | None, typer.Option(help="recover: also the W rounds after the first exact (default 0)")
    ] = None,
    estimate: Annotated[
        str | None,
        typer.Option(help="recover: estimated updates, recorded (default) or lbfgs (FedRecover's)"),
    ] = None,
    out: Annotated[Path, typer.Option(help="parent directory of the new run directory")] = Path("runs"),
) -> None:
    """Write a new run directory whose global adapter excludes PARTICIPANT (docs/removal.md)."""
    # import time: the simulation's torch and transformers
    from consortium.removal import RemovalInputError
    from consortium.removal import remove as remove_from

    quiet_libraries()
    try:
        path = remove_from(
            run_dir,
            participant,
            method,
            out,
            from_round,
            exact_rounds,
            correct_every,
            warmup_rounds=warmup_rounds,
            estimate=estimate,
        )
    except RemovalInputError as e:
        fail(str(e))
    print(f"removal written: {path}")


store_app = typer.Typer(no_args_is_help=True, help="The content-addressed blob store.")
app.add_typer(store_app, name="store")


@store_app.command("serve")
def store_serve(
    dir_: Annotated[Path, typer.Option("--dir", help="blob directory (created if missing)")],
    port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8700,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    max_bytes: Annotated[int, typer.Option(help="largest blob accepted, in bytes")] = 256 * 1024 * 1024,
) -> None:
    """Serve a blob directory over HTTP: PUT verifies sha256 and size, GET re-verifies before serving."""
    if dir_.exists() and not dir_.is_dir():
        fail(f"--dir {dir_}: exists and is not a directory")
    if max_bytes <= 0 or not 0 <= port <= 65535:
        fail(f"--max-bytes must be positive and --port in 0..65535, got {max_bytes} and {port}")
    from consortium.store.server import serve  # optional (the net extra): uvicorn

    def ready(url: str) -> None:
        print(f"serving blob store {dir_} at {url} (max {max_bytes:,} bytes per blob)", flush=True)

    try:
        serve(dir_, host, port, max_bytes, on_ready=ready)
    except OSError as e:
        fail(f"cannot serve {dir_} on {host}:{port}: {e}")
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


# `run` defaults to the demo preset; a chain for nodes defaults to smoke: every node is its own process
# with its own copy of the model, and a walkthrough runs four of them on one machine
NODE_PRESET_HELP = (
    "built-in preset under the config (default smoke: one tiny model per node process; "
    "--preset demo for SmolLM2, as `run` uses)"
)
chain_app = typer.Typer(no_args_is_help=True, help="Deploy the contract for real nodes.")
app.add_typer(chain_app, name="chain")


def _run_config(config: Path | None, preset: str, set_: list[str] | None) -> Any:
    # import time: see `check`
    from consortium.config import ConfigError, load_config

    try:
        cfg = load_config(config, preset, set_ or [])
    except ConfigError as e:
        fail(str(e))
    if cfg.protocol != "chain":
        fail(f"protocol is {cfg.protocol!r}; nodes need protocol = 'chain'")
    from consortium.privacy.tracker import resolve  # import time: torch

    return resolve(cfg)


@chain_app.command("up")
def chain_up(
    dir_: Annotated[Path, typer.Option("--dir", help="where chain.json, run.toml, keys/ and nodeN.toml go")],
    config: Annotated[Path | None, typer.Option(help="run config TOML (over the preset)")] = None,
    preset: Annotated[str, typer.Option(help=NODE_PRESET_HELP)] = "smoke",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="dotted override, e.g. --set rounds=3")
    ] = None,
    port: Annotated[int, typer.Option(help="anvil's port")] = 8545,
    block_time: Annotated[int, typer.Option(help="seconds per block (anvil interval mining)")] = 1,
    phase_blocks: Annotated[int, typer.Option(help="blocks for seed, candidate and reveal windows")] = 3,
    commit_blocks: Annotated[int, typer.Option(help="blocks for the commit (training) window")] = 10,
    vote_blocks: Annotated[int, typer.Option(help="blocks for the vote commit (judging) window")] = 4,
    store: Annotated[str | None, typer.Option(help="store URI written into the node configs")] = None,
) -> None:
    """Start a local anvil, deploy the contract and write everything four terminals need; runs until Ctrl-C.

    Dev keys (anvil's public test keys) go to DIR/keys/orgN.key (mode 600), never to the terminal."""
    # web3 (the chain extra): only the chain commands need it
    from consortium.chain import AnvilNode, RpcBackend, find_anvil
    from consortium.deploy import deploy_for_nodes, node_params, write_deployment
    from consortium.node.build import genesis_digest

    cfg = _run_config(config, preset, set_)
    binary = find_anvil()
    if binary is None:
        fail("anvil not found: `make install` installs it under .tools (or set $ANVIL)")

    def stop(signum: int, frame: Any) -> None:  # SIGTERM too: anvil must not outlive us
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    dir_.mkdir(parents=True, exist_ok=True)
    keys_json = dir_ / ".anvil.json"
    node = AnvilNode(
        str(binary),
        n_accounts=cfg.participants + 1,
        port=port,
        block_time=block_time,
        extra_args=("--config-out", str(keys_json)),
    )
    try:
        node.start()
    except RuntimeError as e:
        fail(str(e))
    try:
        keys = json.loads(keys_json.read_text())["private_keys"]
        keys_json.unlink()
        params = node_params(cfg, phase_blocks, commit_blocks, vote_blocks)
        backend = RpcBackend(node.url, dev=True)
        client = deploy_for_nodes(backend, cfg, params, genesis_digest(cfg))
        where = store or str((dir_ / "store").resolve())
        write_deployment(dir_, node.url, client, cfg, where, keys[1 : cfg.participants + 1], dev_chain=True)
        print(f"anvil at {node.url} (a block every {block_time}s)", flush=True)
        print(f"contract {client.contract_address}", flush=True)
        print(
            f"wrote {dir_}: chain.json, run.toml, keys/orgN.key and nodeN.toml for N < {cfg.participants}",
            flush=True,
        )
        while node.proc is not None and node.proc.poll() is None:
            time.sleep(1)
        fail("anvil exited", 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    finally:
        node.stop()


@chain_app.command("deploy")
def chain_deploy(
    rpc_url: Annotated[str, typer.Option(help="JSON-RPC URL of the chain")],
    key_file: Annotated[Path, typer.Option(help="file holding the deployer's hex private key (mode 600)")],
    dir_: Annotated[Path, typer.Option("--dir", help="where chain.json and run.toml go")],
    config: Annotated[Path | None, typer.Option(help="run config TOML (over the preset)")] = None,
    preset: Annotated[str, typer.Option(help=NODE_PRESET_HELP)] = "smoke",
    set_: Annotated[list[str] | None, typer.Option("--set", help="dotted override")] = None,
    phase_blocks: Annotated[int, typer.Option(help="blocks for seed, candidate and reveal windows")] = 3,
    commit_blocks: Annotated[int, typer.Option(help="blocks for the commit (training) window")] = 10,
    vote_blocks: Annotated[int, typer.Option(help="blocks for the vote commit (judging) window")] = 4,
    store: Annotated[str, typer.Option(help="store URI the nodes will use (recorded in chain.json)")] = "",
) -> None:
    """Deploy the contract to any chain with the run config's parameters, funded with its reward pool."""
    # web3 (the chain extra): see `chain up`
    from consortium.chain import ChainError, RpcBackend
    from consortium.deploy import deploy_for_nodes, node_params, write_deployment
    from consortium.node.build import genesis_digest
    from consortium.node_config import NodeConfig, NodeConfigError, load_key

    cfg = _run_config(config, preset, set_)
    try:
        account = load_key(
            NodeConfig(
                rpc_url=rpc_url,
                contract="0x" + "0" * 40,
                store="",
                run_config=Path(),
                participant_index=0,
                key_file=key_file,
            )
        )
    except NodeConfigError as e:
        fail(str(e))
    try:
        backend = RpcBackend(rpc_url)
        params = node_params(cfg, phase_blocks, commit_blocks, vote_blocks)
        client = deploy_for_nodes(backend, cfg, params, genesis_digest(cfg), account)
    except ChainError as e:
        fail(f"deployment refused: {e}", 1)
    except Exception as e:  # connection refused, insufficient funds...
        fail(f"{rpc_url}: {type(e).__name__}: {e}", 1)
    write_deployment(dir_, rpc_url, client, cfg, store)
    print(
        f"contract {client.contract_address} on {rpc_url}; wrote {dir_}/chain.json and run.toml", flush=True
    )


@app.command()
def node(
    config: Annotated[Path, typer.Option(help="node.toml: chain, contract, store, run config, data, key")],
    rounds: Annotated[int | None, typer.Option(help="stop once the contract's round N is over")] = None,
) -> None:
    """Run one organisation's participant: register, then play every role it is drawn for, round after round.

    The key comes from `key_file` or `key_env` in node.toml, never from the command line or the config."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # import time: the whole participant (model, web3)
    from consortium.node import NodeError, make_node
    from consortium.node_config import NodeConfigError, load_node_config

    try:
        ncfg = load_node_config(config)
    except NodeConfigError as e:
        fail(str(e))
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {ncfg.name} %(message)s", datefmt="%H:%M:%S", force=True
    )
    for noisy in ("web3", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_libraries()
    try:
        n = make_node(ncfg)
        logging.getLogger("consortium.node").info("account %s, state %s", n.address, ncfg.state_file)
        done = n.run(rounds)
    except (NodeConfigError, NodeError) as e:
        fail(str(e), 1)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    print(f"{ncfg.name}: done; rounds finalized while running: {done}", flush=True)


app.add_typer(probe_app, name="probe")
app.add_typer(removal_app, name="removal")
app.command("dashboard")(dashboard)

if __name__ == "__main__":
    app()
