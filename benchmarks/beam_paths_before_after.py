"""The nodelab side of a BEAM round trip, step by step, before and after (issue 12, 1b/1c/2b).

    git archive <commit> | tar -x -C DIR
    .venv/bin/python benchmarks/beam_paths_before_after.py --before DIR

Loads the older tree's ``term_format.py`` and ``beam_link.py`` beside this tree's (no
process, no socket) and times, interleaved, the fastest of ``--repeat`` batches of 5,000:

* **in**: one frame from a BEAM, SEND_SENDER with ``{pid, :ping}`` (1c's ping) and with
  ``:ping`` (1b's answer), from its body to the runtime's ``deliver`` (a no-op here): before,
  ``decode_frame`` + the link's ``_dispatch`` + ``BeamPeer._on_event`` / ``_on_send``; after,
  ``decode_parts`` + the link's ``_handle`` + its ``on_send``;
* **out**: the frame of a send to a BEAM pid or name, from the message to the bytes given to
  the link: before, the events, ``to_wire`` twice and ``encode_frame``, as the older
  ``BeamPeer._send`` did; after, ``BeamPeer``'s kept control message +
  ``encode_dist_frame_after``. Both must give the same bytes (checked first).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import timeit
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import nodelab.dist as dist_pkg  # noqa: E402 - after this tree is first on the path
from nodelab.dist import beam_link as bl  # noqa: E402
from nodelab.dist import term_format as tf  # noqa: E402
from nodelab.runtime.pids import Pid  # noqa: E402


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="an unpacked older tree")
    parser.add_argument("--repeat", type=int, default=25)
    args = parser.parse_args()
    old_tf = load("before_term_format", args.before / "nodelab/dist/term_format.py")
    # The older beam_link imports the older codec (``from nodelab.dist import term_format``).
    sys.modules["nodelab.dist.term_format"] = old_tf
    dist_pkg.term_format = old_tf  # type: ignore[attr-defined]
    try:
        old_bl = load("before_beam_link", args.before / "nodelab/dist/beam_link.py")
    finally:
        sys.modules["nodelab.dist.term_format"] = tf
        dist_pkg.term_format = tf  # type: ignore[attr-defined]

    beam = Pid("kate@localhost", 112, 1764600001, 0)
    me = Pid("py@localhost", 5, 1764600002, 0)

    def deliver(serial: int, creation: int, message: Any) -> None:
        pass

    # --- in
    class OldPeer:  # the older BeamPeer's way in: _on_event -> _HANDLERS -> _on_send
        handlers: dict[type, Any] = {}

        def on_event(self, event: Any) -> None:
            handler = self.handlers.get(type(event))
            if handler is not None:
                handler(self, event)

        def on_send(self, event: Any) -> None:
            deliver(event.to_pid.serial, event.to_pid.creation, event.message)

    OldPeer.handlers[old_bl.Send] = OldPeer.on_send
    old_link = old_bl.BeamLink.__new__(old_bl.BeamLink)
    old_link.answer_is_auth, old_link.on_event = True, OldPeer().on_event
    old_link.atom_cache = old_tf.AtomCache()
    new_link = bl.BeamLink.__new__(bl.BeamLink)
    new_link.answer_is_auth, new_link.on_event = True, None
    new_link.on_send = lambda pid, message: deliver(pid.serial, pid.creation, message)
    new_link.atom_cache = tf.AtomCache()

    def inbound(message_of: Any) -> tuple[Any, Any]:
        old = old_tf.encode_dist_message((22, beam, me), message_of(old_tf))
        new = tf.encode_dist_message((22, beam, me), message_of(tf))
        assert old == new
        return (lambda: old_link._dispatch(old_bl.decode_frame(old, old_link.atom_cache)),
                lambda: new_link._handle(*bl.decode_parts(new, new_link.atom_cache)))

    # --- out
    old_tf._ENCODERS[tf.Atom] = old_tf._enc_atom  # the events below are this tree's
    heads: dict[Any, bytes] = {}

    def old_frame(event: Any) -> bytes:
        control, message = bl.Unknown(*event.to_wire()).to_wire()
        body = old_tf.encode_dist_message(control, message)
        return bl._LENGTH.pack(len(body)) + body

    def new_frame(key: Any, control: tuple, message: Any) -> bytes:
        head = heads.get(key)
        if head is None:
            head = heads[key] = tf.encode_dist_message(control)
        return tf.encode_dist_frame_after(head, message)

    ping, empty = tf.Atom("ping"), tf.Atom("")

    def outbound(name: str | None, message: Any) -> tuple[Any, Any]:
        if name is None:
            before = lambda: old_frame(bl.Unknown((bl.SEND, empty, beam), message))  # noqa: E731
            after = lambda: new_frame(beam, (bl.SEND, empty, beam), message)  # noqa: E731
        else:
            before = lambda: old_frame(bl.RegSend(me, tf.Atom(name), message))  # noqa: E731
            after = lambda: new_frame((me, name), (bl.REG_SEND, me, empty, tf.Atom(name)),  # noqa: E731
                                      message)
        assert before() == after()
        return before, after

    cases = {
        "in: SEND_SENDER {pid, :ping} (1c's ping)": inbound(lambda m: (beam, m.Atom("ping"))),
        "in: SEND_SENDER :ping (1b's answer)": inbound(lambda m: m.Atom("ping")),
        "out: SEND :ping (1c's answer)": outbound(None, ping),
        "out: REG_SEND {pid, :ping} (1b's ping)": outbound("bench_echo", (me, ping)),
        "out: SEND {:m, i} (2b)": outbound(None, (tf.Atom("m"), 12345)),
    }
    best: dict[tuple[str, int], float] = {}
    for _ in range(args.repeat):
        for label, pair in cases.items():
            for side, fn in enumerate(pair):
                us = timeit.timeit(fn, number=5000) / 5000 * 1e6
                best[label, side] = min(best.get((label, side), 1e9), us)
    print(f"load average {os.getloadavg()}; us per frame, fastest of {args.repeat} x 5,000")
    print("| step | before | after |")
    print("|---|---|---|")
    for label in cases:
        print(f"| {label} | {best[label, 0]:.2f} | {best[label, 1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
