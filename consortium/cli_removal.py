"""`consortium removal`: propose, approve and follow a contribution removal on a live network, with the
key of one node (its node.toml). The contract decides and every node replays (consortium.node.govern)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from consortium.cli_support import fail

removal_app = typer.Typer(
    no_args_is_help=True,
    help="Remove a participant's contribution on a live network: the contract rewinds, the nodes replay.",
)
NodeOpt = Annotated[
    Path, typer.Option("--config", help="this node's node.toml (its chain, contract and key)")
]


def _client(config: Path) -> Any:
    """The node's chain client acting with its key; a bad config or an unreachable chain: one line."""
    from consortium.node import NodeError  # import time: the node package loads web3 and torch
    from consortium.node.net import connect  # import time: as above
    from consortium.node_config import NodeConfigError, load_key, load_node_config  # import time: as above

    try:
        ncfg = load_node_config(config)
        return connect(ncfg, load_key(ncfg))
    except (NodeConfigError, NodeError) as e:
        fail(str(e))
    except Exception as e:  # web3 raises plain connection errors
        fail(f"{config}: cannot reach the chain: {type(e).__name__}: {e}")


def _send(what: str, call: Any) -> None:
    from consortium.chain import ChainError  # import time: web3

    try:
        call()
    except ChainError as e:
        fail(f"{what}: the contract refused it: {e.reason}")


@removal_app.command("propose")
def propose(
    config: NodeOpt,
    participant: Annotated[str, typer.Option(help="the participant's account address")],
    from_round: Annotated[
        int | None, typer.Option(help="first round to undo (default: its first accepted)")
    ] = None,
) -> None:
    """Propose rewinding the global model to the start of `--from-round` and replaying without
    `--participant`; this node's approval counts unless it proposes its own removal."""
    from consortium.node.govern import checked_address, describe, first_accepted_round  # import time: web3

    try:
        target = checked_address(participant)
    except ValueError as e:
        fail(f"--participant: {e}")
    if from_round is not None and from_round < 1:
        fail(f"--from-round: rounds are numbered from 1, got {from_round}")
    client = _client(config)
    if from_round is None:
        from_round = first_accepted_round(client.history(), target)
        if from_round is None:
            fail(f"{target}: no accepted round took an update of it in; give --from-round to rewind anyway")
    _send("propose_removal", lambda: client.propose_removal(target, from_round))
    rm = client.history().removals[-1]
    print(describe(rm, client.removal_support(rm)))


@removal_app.command("approve")
def approve(
    config: NodeOpt,
    removal_id: Annotated[
        int, typer.Option("--id", help="the proposal to approve (`consortium removal status`)")
    ],
) -> None:
    """Approve proposal `--id` with this node's stake (the id guards against approving another one)."""
    from consortium.node.govern import describe  # import time: web3

    client = _client(config)
    _send("approve_removal", lambda: client.approve_removal(removal_id))
    rm = client.history().removals[removal_id - 1]
    print(describe(rm, client.removal_support(rm)))


@removal_app.command("status")
def status(config: NodeOpt) -> None:
    """Every removal proposal of the deployment and what became of it."""
    from consortium.node.govern import status as lines  # import time: web3

    out = lines(_client(config))
    print("\n".join(out) if out else "no removal was ever proposed")
