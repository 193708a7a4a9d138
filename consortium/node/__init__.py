"""`consortium node`: one organisation's participant, acting for itself on a shared chain and blob store
(`agent.Node`), built from its `node.toml` (`build.make_node`)."""

from consortium.node.agent import Node
from consortium.node.build import make_node
from consortium.node.net import NodeError

__all__ = ["Node", "NodeError", "make_node"]
