"""Links and monitors: who is told when a process ends.

A link is two-way and carries exit signals; a monitor is one-way and brings a
``("DOWN", ref, "process", pid, reason)`` message. Both work across nodes, through the
transport; a node that goes down counts as ``"noconnection"`` for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nodelab.errors import NodelabError
from nodelab.runtime import _kill, pids
from nodelab.runtime._table import current, lookup, runtime
from nodelab.runtime.exits import NOCONNECTION, NOPROC, deliver_exit
from nodelab.runtime.mailbox import NO_MATCH
from nodelab.runtime.messages import send
from nodelab.runtime.patterns import is_down_for
from nodelab.runtime.pids import Pid, Ref, make_ref
from nodelab.runtime.transport import control, current_transport


def link(pid: Pid) -> bool:
    """Link the caller and ``pid``: when either ends abnormally, the other is told."""
    me = current()
    if pid == me.pid:
        return True
    _kill.check(me)
    token = _kill.enter(me)
    try:
        me.links.add(pid)
        if pid.is_local:
            target = lookup(pid)
            if target is None:
                # Linking to a process that is gone is answered with an exit signal "noproc".
                deliver_exit(me, pid, NOPROC, linked=True)
                return True
            target.links.add(me.pid)
        else:
            dist = current_transport()
            if dist is None or not dist.control(pid.node, ("link", me.pid, pid), connect=True):
                deliver_exit(me, pid, NOCONNECTION, linked=True)
        return True
    finally:
        _kill.leave(token)


def unlink(pid: Pid) -> bool:
    """Remove the link between the caller and ``pid``, if any."""
    me = current()
    token = _kill.enter(me)
    try:
        me.links.discard(pid)
        if pid.is_local:
            target = lookup(pid)
            if target is not None:
                target.links.discard(me.pid)
        else:
            control(pid.node, ("unlink", me.pid, pid), connect=False)
        return True
    finally:
        _kill.leave(token)


def exit_from(pid: Pid, reason: Any) -> None:
    """Act as if the caller were linked to ``pid`` and ``pid`` ended with ``reason`` (a
    ``Node.spawn_link`` that could not reach its node)."""
    me = current()
    token = _kill.enter(me)
    try:
        me.links.add(pid)
        deliver_exit(me, pid, reason, linked=True)
    finally:
        _kill.leave(token)


def monitor(target: Pid | str | tuple[str, str],
            then_send: Callable[[Ref], Any] | None = None) -> Ref:
    """Watch ``target`` (a PID, a registered name, or ``(name, node)``) without a link.

    When it ends, the caller receives ``("DOWN", ref, "process", pid, reason)``; for a
    process that does not exist the reason is ``"noproc"``, and for one on a node that
    cannot be reached, ``"noconnection"``.

    ``then_send(ref)``, if given, is a message sent to ``target`` once it is watched (a
    call and its monitor): to another node, the monitor and the message leave in one frame.
    A local name nobody holds is sent nothing (its DOWN ``"noproc"`` is already queued).
    """
    me = current()
    _kill.check(me)
    token = _kill.enter(me)
    try:
        ref = _monitor(me, target, then_send)
    finally:
        _kill.leave(token)
    return ref


def _monitor(me: Any, target: Pid | str | tuple[str, str],
             then_send: Callable[[Ref], Any] | None = None) -> Ref:
    ref = make_ref()
    if then_send is None:
        return _watch(me, ref, target)
    message = then_send(ref)
    if isinstance(target, tuple) and target[1] != pids.local_node():
        return _monitor_remote(me, ref, target[1], target, (target[0], message))
    if type(target) is Pid and not target.is_local:
        return _monitor_remote(me, ref, target.node, target, (target, message))
    _watch(me, ref, target)  # a local target: watched first, then sent to
    try:
        send(target, message)
    except NodelabError:
        pass  # a local name nobody holds: the monitor has already queued DOWN "noproc"
    return ref


def _watch(me: Any, ref: Ref, target: Pid | str | tuple[str, str]) -> Ref:
    if isinstance(target, tuple):
        name, node = target
        if node != pids.local_node():
            return _monitor_remote(me, ref, node, target)
        target = name
    if isinstance(target, str):
        proc = runtime.registry.get(target)
        if proc is None:
            me.mailbox.put(("DOWN", ref, "process", (target, pids.local_node()), NOPROC))
            return ref
        target = proc.pid
    if not target.is_local:
        return _monitor_remote(me, ref, target.node, target)
    watched = lookup(target)
    with runtime.lock:
        if watched is None or watched.status == "exited":
            me.mailbox.put(("DOWN", ref, "process", target, NOPROC))
            return ref
        watched.watchers[ref] = me.pid
        me.watching[ref] = target
    return ref


def _monitor_remote(me: Any, ref: Ref, node: str, target: Any,
                    then: tuple[Pid | str, Any] | None = None) -> Ref:
    me.watching[ref] = target
    dist = current_transport()
    op = ("monitor", me.pid, target, ref)
    if then is None:
        sent = dist is not None and dist.control(node, op, connect=True)
    else:
        _trace(me, target, then[1])
        try:
            sent = dist is not None and dist.control_then_send(node, op, then[0], then[1],
                                                               me.pid)
        except BaseException:
            # The message could not be encoded (raised in the sender's words): nothing
            # left, so no monitor either.
            me.watching.pop(ref, None)
            raise
    if not sent:
        me.watching.pop(ref, None)
        me.mailbox.put(("DOWN", ref, "process", target, NOCONNECTION))
    return ref


def _trace(me: Any, dest: Any, message: Any) -> None:
    # What send() tells the tracer (the %%sequence pictures), for a message that leaves
    # with a control signal instead of through send().
    tracer = runtime.tracer
    if tracer is not None:
        tracer(me.pid, dest, message)


def demonitor(ref: Ref, *, flush: bool = False) -> bool:
    """Stop the monitor ``ref``; with ``flush=True`` also drop its DOWN message if queued."""
    me = current()
    token = _kill.enter(me)
    try:
        target = me.watching.pop(ref, None)
        if isinstance(target, Pid) and target.is_local:
            watched = lookup(target)
            if watched is not None:
                watched.watchers.pop(ref, None)
        elif target is not None:
            node = target.node if isinstance(target, Pid) else target[1]
            control(node, ("demonitor", me.pid, target, ref), connect=False)
        if flush:
            me.mailbox.take(lambda m: m if is_down_for(m, ref) else NO_MATCH, 0)
        return True
    finally:
        _kill.leave(token)


def is_monitoring(ref: Ref) -> bool:
    """Whether the caller's monitor ``ref`` is still in place (no DOWN has come for it)."""
    return ref in current().watching


def forget_monitor(ref: Ref) -> None:
    """Drop the caller's monitor ``ref`` here, and its DOWN if queued, without telling the
    other side (whose end of it is already gone: a task that finished and replied)."""
    me = current()
    token = _kill.enter(me)
    try:
        me.watching.pop(ref, None)
        me.mailbox.take(lambda m: m if is_down_for(m, ref) else NO_MATCH, 0)
    finally:
        _kill.leave(token)


def forget_watcher(ref: Ref) -> None:
    """Drop the monitor ``ref`` that another process holds on the caller, so that no DOWN is
    sent for it (its holder has what it waited for and forgets the monitor itself)."""
    current().watchers.pop(ref, None)


def hand_over_monitor(ref: Ref, owner: Pid, to: Pid, *, link: bool,
                      then_send: tuple[Pid, Any] | None = None) -> None:
    """Make ``owner``'s monitor ``ref`` of the caller a monitor of ``to`` instead, and link
    ``to`` and ``owner`` when ``link`` — before ``to`` runs any code.

    This is how a task supervisor starts a task for a caller: the caller monitored the
    supervisor for its request; the task's exit then reaches the caller as
    ``("DOWN", ref, "process", to, reason)``, and a lost node still reaches it as
    ``noconnection``, because the caller's end watches this node. The link is what
    ``link(owner)`` from the task would do.

    ``then_send=(dest, message)`` is sent right after (the supervisor's reply): when the
    link goes to another node and ``dest`` lives there, in the same frame as the link.
    """
    me = current()
    token = _kill.enter(me)
    try:
        me.watchers.pop(ref, None)
        task = lookup(to)
        if task is None:
            # Killed a moment ago (by hand): what a monitor of a dead process says.
            send(owner, ("DOWN", ref, "process", to, NOPROC))
        else:
            task.watchers[ref] = owner
            if link:
                task.links.add(owner)
                if owner.is_local:
                    holder = lookup(owner)
                    if holder is not None:
                        holder.links.add(to)
                    else:
                        deliver_exit(task, owner, NOPROC, linked=True)
                else:
                    # Sent before the caller's reply, on the same connection (or with it,
                    # in one frame): the owner's node records the link before it can see
                    # anything from the task.
                    op = ("link", to, owner)
                    dest = then_send[0] if then_send is not None else None
                    if type(dest) is Pid and dest.node == owner.node:
                        _trace(me, dest, then_send[1])
                        dist = current_transport()
                        if dist is not None:
                            dist.control_then_send(owner.node, op, dest, then_send[1], me.pid,
                                                   connect=False)
                        then_send = None
                    else:
                        control(owner.node, op, connect=False)
    finally:
        _kill.leave(token)
    if then_send is not None:
        send(*then_send)


def watch_node(node: str) -> Ref:
    """Record that the caller receives ``("nodedown", node)`` when ``node`` goes down
    (``Node.monitor``); the transport's nodedown fires it."""
    ref = make_ref()
    me = current().pid
    with runtime.lock:
        runtime.node_watchers[ref] = (me, node)
    return ref


def unwatch_node(node: str) -> None:
    """Forget every node monitor of ``node`` that the caller holds."""
    me = current().pid
    with runtime.lock:
        for ref in [r for r, (p, n) in runtime.node_watchers.items() if p == me and n == node]:
            del runtime.node_watchers[ref]
