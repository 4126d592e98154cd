"""Pictures of what processes do — like Livebook's ``Kino.Process``.

Two pictures, each a Mermaid diagram in Jupyter (JupyterLab 4 draws Mermaid in Markdown
output with no extension to install) and readable text in a terminal:

* **message sequences** — :func:`record_messages`, :func:`trace`, the ``%%sequence`` cell
  magic: every message sent while the code runs, on this node and on the nodes it is
  connected to, as a sequence diagram whose lifelines are processes grouped by node;
* **supervision trees** — :func:`supervision_tree`, :func:`app_tree`, the
  ``%supervision_tree`` magic: a supervisor, its strategy and its children, down the tree.

::

    from nodelab.pictures import record_messages, supervision_tree

    with record_messages("ping pong") as recording:
        send(pid, ("ping", self()))
        receive()
    recording.diagram

    supervision_tree(("Chat.Supervisor", "kate@localhost"))

Importing this package registers the control request other nodes use to take part in a
picture (see :mod:`nodelab.pictures._remote`); a node that receives such a request imports
it by itself, so nothing has to be set up on the other nodes.
"""

from __future__ import annotations

from . import _remote  # noqa: F401 - registers the "nodelab.pictures" control operation
from ._mermaid import Picture
from .sequence import Recording, SequenceDiagram, record_messages, trace
from .tree import SupervisionTree, TreeNode, app_tree, supervision_tree

__all__ = [
    "Picture", "Recording", "SequenceDiagram", "SupervisionTree", "TreeNode", "app_tree",
    "record_messages", "supervision_tree", "trace",
]
