"""Shipped functions find their global names on the node where they run."""

from __future__ import annotations

import json
import pickle
import sys

import pytest

from nodelab.dist import shipment
from nodelab.errors import CodeVersionMismatch


@pytest.fixture
def remote_namespace():
    """Stand in for another node's namespace: where shipped code resolves its globals."""
    namespace: dict = {"__builtins__": __builtins__}
    shipment.set_namespace_provider(lambda: namespace)
    yield namespace
    shipment.set_namespace_provider(lambda: sys.modules["__main__"].__dict__)


def test_plain_messages_round_trip() -> None:
    message = ("hi", 1, [2.5, None], {"a": b"b"})
    assert shipment.loads(shipment.dumps(message)) == message


def test_a_lambda_resolves_globals_where_it_runs(remote_namespace: dict) -> None:
    fn = eval("lambda: Kate.say_name()", {"__name__": "__main__"})  # typed in a notebook
    shipped = shipment.loads(shipment.dumps(fn))

    class Kate:
        @staticmethod
        def say_name() -> str:
            return "Hi, my name is Kate"

    with pytest.raises(NameError, match="Kate"):
        shipped()
    remote_namespace["Kate"] = Kate
    assert shipped() == "Hi, my name is Kate"


def test_captured_variables_travel_by_value(remote_namespace: dict) -> None:
    def outer():
        greeting = "hello"
        return lambda name: f"{greeting}, {name}"

    shipped = shipment.loads(shipment.dumps(outer()))
    assert shipped("kate") == "hello, kate"


def test_module_functions_travel_by_reference() -> None:
    data = shipment.dumps(json.dumps)
    assert b"json" in data
    assert shipment.loads(data) is json.dumps


def test_code_from_another_python_is_refused_clearly() -> None:
    fn = eval("lambda: 1", {"__name__": "__main__"})
    rebuild, args = shipment._function_reduction(fn)
    with pytest.raises(CodeVersionMismatch, match="module function by name"):
        rebuild("cpython-2.7", *args[1:])


def test_import_function_prefers_the_node_namespace(remote_namespace: dict) -> None:
    class Kate:
        @staticmethod
        def say_name() -> str:
            return "kate"

    remote_namespace["Kate"] = Kate
    assert shipment.import_function("Kate", "say_name")() == "kate"
    assert shipment.import_function("json", "dumps") is json.dumps


def test_pids_and_refs_travel_as_their_fields() -> None:
    from nodelab.runtime.pids import Pid, Ref, local_node, make_ref

    remote = Pid("kate@localhost", 42, 7, 3)
    local = Pid.of_this_node(5)
    ref = make_ref()
    back_remote, back_local, back_ref = shipment.loads(shipment.dumps((remote, local, ref)))
    assert back_remote == remote and back_remote.generation == 3 and back_remote.creation == 7
    # A local PID leaves with the node's name and creation, and is still equal to itself.
    assert back_local == local and back_local._node == local_node()
    assert back_ref == ref and type(back_ref) is Ref and back_ref.words == ref.words
    with pytest.raises(AttributeError, match="is a value"):
        back_remote.serial = 1
    # The compact form names no class: a PID costs its four fields and one rebuild function.
    assert b"Pid" not in shipment.dumps(remote)


def test_a_lambda_inside_a_plain_message_still_travels_as_code(remote_namespace: dict) -> None:
    fn = eval("lambda: Kate", {"__name__": "__main__"})
    tag, shipped = shipment.loads(shipment.dumps(("run", fn)))
    remote_namespace["Kate"] = "kate's Kate"
    assert tag == "run" and shipped() == "kate's Kate"


def test_a_notebook_function_travels_as_code_not_as_a_name(remote_namespace: dict) -> None:
    # A function of __main__ that C pickle could name: the other node may not have it.
    namespace = sys.modules["__main__"].__dict__
    exec("def _codec_test_greet():\n    return Kate", namespace)
    try:
        fn = namespace["_codec_test_greet"]
        shipped = shipment.loads(shipment.dumps({"f": fn}))["f"]
        assert shipped is not fn
        remote_namespace["Kate"] = "here"
        assert shipped() == "here"
    finally:
        del namespace["_codec_test_greet"]


def test_a_notebook_class_resolves_on_the_receiving_node(remote_namespace: dict) -> None:
    namespace = sys.modules["__main__"].__dict__
    exec("class _CodecTestPoint:\n    def __init__(self, x):\n        self.x = x", namespace)
    try:
        data = shipment.dumps(("at", namespace["_CodecTestPoint"](3)))
        with pytest.raises(pickle.UnpicklingError, match="not defined on this node"):
            shipment.loads(memoryview(b"..." + data)[3:])  # as the reader hands it over

        class _CodecTestPoint:  # the receiving node's own class of that name
            pass

        remote_namespace["_CodecTestPoint"] = _CodecTestPoint
        tag, point = shipment.loads(memoryview(data))
        assert tag == "at" and type(point) is _CodecTestPoint and point.x == 3
    finally:
        del namespace["_CodecTestPoint"]


def test_a_shipment_encodes_as_the_shipping_pickler_would(remote_namespace: dict) -> None:
    from nodelab.runtime.pids import Pid

    caller = Pid("alex@localhost", 42, 7)

    def made_by_a_caller(who):
        return lambda word: (Kate, who, word)  # noqa: F821 - resolved on the receiving node

    payload = shipment.build(made_by_a_caller(caller), None, ["hi"])
    data = shipment.dumps(payload)
    assert data == shipment._ship(payload)  # the C-pickle path writes the same bytes
    remote_namespace["Kate"] = "kate's Kate"
    assert shipment.run(data) == ("kate's Kate", caller, "hi")


def test_a_shipment_with_what_c_pickle_refuses_still_travels(remote_namespace: dict) -> None:
    namespace = sys.modules["__main__"].__dict__
    exec("class _CodecTestBox:\n    pass", namespace)
    try:
        inner = eval("lambda: 'inner'", {"__name__": "__main__"})
        captures_a_lambda = (lambda f: lambda: f())(inner)
        assert shipment.run(shipment.dumps(shipment.build(captures_a_lambda))) == "inner"
        box = namespace["_CodecTestBox"]()
        data = shipment.dumps(shipment.build((lambda b: lambda: type(b).__name__)(box)))
        remote_namespace["_CodecTestBox"] = type("_CodecTestBox", (), {})
        assert shipment.run(data) == "_CodecTestBox"  # the receiving node's own class
    finally:
        del namespace["_CodecTestBox"]


def test_a_function_shipped_again_shares_its_code_but_nothing_else() -> None:
    # The receiving node rebuilds the code of a function it has seen once from a cache:
    # each rebuilt function still has its own captured values and the namespace of the
    # moment it was rebuilt.
    def capture(value):
        return lambda: (value, Where)  # noqa: F821 - resolved on the receiving node

    first_ns: dict = {"Where": "first"}
    second_ns: dict = {"Where": "second"}
    try:
        shipment.set_namespace_provider(lambda: first_ns)
        one = shipment.loads(shipment.dumps(capture(1)))
        shipment.set_namespace_provider(lambda: second_ns)
        two = shipment.loads(shipment.dumps(capture(2)))
    finally:
        shipment.set_namespace_provider(lambda: sys.modules["__main__"].__dict__)
    assert one is not two and one.__code__ is two.__code__
    assert one() == (1, "first") and two() == (2, "second")
    other = shipment.loads(shipment.dumps(lambda: "another function"))
    assert other.__code__ is not one.__code__ and other() == "another function"


def test_what_cannot_be_pickled_fails_in_the_shipping_picklers_words() -> None:
    import threading

    with pytest.raises(TypeError, match="lock"):
        shipment.dumps(("m", threading.Lock()))


# --- frames: a burst leaves as MAC'd batches -------------------------------------------------

class _Side:
    """What a Connection asks of its node: a flusher queue, dispatch, connection_down."""

    def __init__(self) -> None:
        import queue
        import threading

        self.flush_queue: queue.SimpleQueue = queue.SimpleQueue()
        self.frames: list[tuple[int, bytes]] = []
        self.down: list[str] = []
        self.changed = threading.Condition()
        self.flusher = threading.Thread(target=self._flush, daemon=True)
        self.flusher.start()

    def _flush(self) -> None:
        while (conn := self.flush_queue.get()) is not None:
            conn.flush_pending()

    def dispatch(self, conn, kind: int, body: bytes) -> None:
        with self.changed:
            self.frames.append((kind, body))
            self.changed.notify_all()

    def connection_down(self, conn, reason: str) -> None:
        with self.changed:
            self.down.append(reason)
            self.changed.notify_all()


def _connected_pair(key_ab: bytes = b"a" * 32, key_ba: bytes = b"b" * 32):
    import socket

    from nodelab.dist.connection import Connection

    a_sock, b_sock = socket.socketpair()
    a_side, b_side = _Side(), _Side()
    a = Connection(a_side, a_sock, "b@localhost", key_ab, key_ba, shipment.PYTHON_TAG)
    b = Connection(b_side, b_sock, "a@localhost", key_ba, key_ab, shipment.PYTHON_TAG)
    b.reader.start()
    return a, a_side, b, b_side


def _close(*pairs) -> None:
    for conn, side in pairs:
        conn.close("connection_closed")
        conn.sock.close()
        side.flush_queue.put(None)
        side.flusher.join(5)


def test_a_burst_arrives_whole_in_order_in_fewer_macd_frames() -> None:
    from nodelab.dist import frames

    a, a_side, b, b_side = _connected_pair()
    try:
        sent = [(frames.DATA, f"message {i}".encode() * (1 + i % 7)) for i in range(3000)]
        sent.append((frames.DATA, b"z" * 100_000))  # larger than a batch: leaves on its own
        sent += [(frames.TICK, b"")] * 5
        for kind, body in sent:
            assert a.send_frame(kind, body)
        with b_side.changed:
            assert b_side.changed.wait_for(lambda: len(b_side.frames) == len(sent), 30)
        assert b_side.frames == sent and b_side.down == []
        # Sent back to back, most went in batches: fewer sequence numbers than frames.
        assert b.recv_seq == a.send_seq < len(sent)
    finally:
        _close((a, a_side), (b, b_side))
        b.reader.join(5)


def test_a_batch_is_checked_whole_before_any_of_its_frames_is_used() -> None:
    from nodelab.dist import frames

    a, a_side, b, b_side = _connected_pair()
    try:
        good = frames.encode_batch(a.send_mac, 0, [(frames.DATA, b"one"), (frames.DATA, b"two")])
        a.sock.sendall(good)
        with b_side.changed:
            assert b_side.changed.wait_for(lambda: len(b_side.frames) == 2, 30)
        # The same batch again (a replay), then one with a byte changed: nothing of either
        # is dispatched, and the first bad one closes the connection.
        tampered = bytearray(frames.encode_batch(a.send_mac, 1, [(frames.DATA, b"three"),
                                                                 (frames.DATA, b"four")]))
        tampered[-1] ^= 1
        a.sock.sendall(good + bytes(tampered))
        with b_side.changed:
            assert b_side.changed.wait_for(lambda: b_side.down, 30)
        assert b_side.down == ["bad_frame"]
        assert b_side.frames == [(frames.DATA, b"one"), (frames.DATA, b"two")]
    finally:
        _close((a, a_side), (b, b_side))
        b.reader.join(5)


def test_a_malformed_batch_with_a_valid_mac_is_refused_whole() -> None:
    from nodelab.dist import frames

    with pytest.raises(frames.FrameError, match="batch"):
        frames.split_batch(frames.INNER.pack(1, frames.DATA) + frames.INNER.pack(50, 1) + b"x")
    inner = frames.INNER.pack(1, frames.BATCH)
    with pytest.raises(frames.FrameError, match="batch inside a batch"):
        frames.split_batch(inner)
    assert frames.split_batch(b"") == []


def test_two_flushers_at_once_keep_the_batches_in_order() -> None:
    """The flusher thread and a stopping node may flush together: batches still leave in
    the order of their sequence numbers, so the peer refuses none of them."""
    import threading

    from nodelab.dist import frames

    a, a_side, b, b_side = _connected_pair()
    stop = threading.Event()

    def second_flusher() -> None:
        while not stop.is_set():
            a.flush_pending()

    helper = threading.Thread(target=second_flusher)
    helper.start()
    try:
        sent = [(frames.DATA, b"%d" % i * 20) for i in range(20000)]
        for kind, body in sent:
            assert a.send_frame(kind, body)
        with b_side.changed:
            assert b_side.changed.wait_for(
                lambda: len(b_side.frames) == len(sent) or b_side.down, 60)
        assert b_side.down == []
        assert b_side.frames == sent
    finally:
        stop.set()
        helper.join(10)
        _close((a, a_side), (b, b_side))
        b.reader.join(5)
