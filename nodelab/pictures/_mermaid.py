"""Small helpers shared by the pictures: Mermaid text escaping and the display bundle.

JupyterLab (>= 4.1) renders a Markdown fence marked ``mermaid`` as a diagram, in Markdown
cells *and* in ``text/markdown`` outputs, with no extension to install (the
``@jupyterlab/mermaid-extension`` plugin ships with it). So a picture is published as a
Markdown fence, next to a ``text/plain`` rendering for terminals, nbval and any front end
that does not draw Mermaid.
"""

from __future__ import annotations

from typing import Any

# Mermaid reads ``#...;`` as an entity and ``;`` as a statement end; ``<``/``>`` and quotes
# would be taken as HTML or as the end of a quoted label. One pass (str.translate), so the
# ``;`` that an escape introduces is not escaped again.
_ESCAPES = str.maketrans({
    "#": "#35;",
    ";": "#59;",
    "<": "#lt;",
    ">": "#gt;",
    '"': "#quot;",
    "`": "#96;",
    "\n": " ",
    "\r": " ",
    "\t": " ",
})


def escape(text: str) -> str:
    """``text`` made safe for a Mermaid label or message (one line, no markup)."""
    return text.translate(_ESCAPES)


def fence(source: str) -> str:
    """A Markdown code fence that JupyterLab draws as a Mermaid diagram."""
    return f"```mermaid\n{source.rstrip()}\n```\n"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with ``…`` saying that it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def short_node(node: str) -> str:
    """``kate@localhost`` -> ``kate``: the name a learner calls the node by."""
    return node.split("@", 1)[0]


class Picture:
    """A picture with a Mermaid source, a Markdown form and a text form.

    Shown richly by Jupyter (``_repr_mimebundle_``), as text by ``print``, ``repr`` and
    terminal IPython — so the same object is useful in a notebook and in a shell.
    """

    #: Mermaid source, without the Markdown fence (empty when there is nothing to draw).
    mermaid: str = ""
    #: The plain-text rendering.
    text: str = ""
    #: Lines of Markdown shown under the diagram (e.g. nodes that did not answer).
    notes: tuple[str, ...] = ()

    @property
    def markdown(self) -> str:
        """What a notebook shows: the Mermaid fence, then the notes."""
        body = fence(self.mermaid) if self.mermaid else ""
        extra = "\n".join(f"*{note}*  " for note in self.notes)
        return body + ("\n" + extra + "\n" if extra else "")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/markdown": self.markdown, "text/plain": self.text}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text
