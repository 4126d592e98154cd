"""A nodelab node in a real Erlang cluster, both directions (issue 10, parts 2 and 4).

This test process is the nodelab node ``alex@localhost`` (started once for the module, with
a namespace holding the Python "modules" the BEAM calls); ``kate@localhost`` is a real
Elixir node (``tests/beam.py``). Every item of SPEC section 6 that crosses the border is
checked from both sides: ping, node lists and epmd, a wrong cookie, messages and registered
names, links, unlink, monitors, ``exit/2``, ``noconnection`` after a SIGKILL, spawns with the
print landing on the caller's group leader, ``:undef``, ``:erpc``/``:rpc``, ``GenServer``
calls, a value with no Erlang form, and a quiet connection kept alive by ticks.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import types
from collections.abc import Iterator

import pytest
from beam import COOKIE, BeamNode, epmd_names, requires_elixir, running_epmd

from nodelab import (
    ANY,
    Node,
    Pid,
    Process,
    demonitor,
    exit,
    group_leader,
    link,
    monitor,
    receive,
    register,
    self,
    send,
    spawn,
    start_group_leader,
    unlink,
    unregister,
)
from nodelab.dist import erlang_handshake as eh
from nodelab.dist.term_format import Atom, ImproperList, TermEncodeError
from nodelab.otp import server
from nodelab.runtime import gen_server
from nodelab.runtime import processes as P
from nodelab.runtime.group_leader import install_router
from nodelab.tools import peer

pytestmark = requires_elixir

KATE = "kate@localhost"
ALEX = "alex@localhost"

GREETER = '''
def hello(who):
    print("hello,", who)

def add(a, b):
    return a + b

def fail():
    return 1 / 0

class Greeter:
    @staticmethod
    def hi(who):
        print("hi from the Greeter alias,", who)
'''

KATE_CODE = '''
defmodule Kate do
  def say_name, do: IO.puts("Kate here")
  def say(text), do: :io.format("kate says ~s~n", [text])
end
defmodule Counter do
  use GenServer
  def init(n), do: {:ok, n}
  def handle_call(:get, _from, n), do: {:reply, n, n}
  def handle_call({:add, k}, _from, n), do: {:reply, n + k, n + k}
  def handle_call(:from, from, n), do: {:reply, from, n}
end
{:ok, _} = GenServer.start(Counter, 42, name: :counter)
Process.register(self(), :kate_shell)
:ok
'''


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def kate() -> Iterator[BeamNode]:
    greeter = types.ModuleType("greeter")
    exec(GREETER, greeter.__dict__)
    namespace = {"greeter": greeter, "Greeter": greeter.Greeter}
    with running_epmd():
        Node.start("alex", cookie=COOKIE, tick_time=2, namespace=namespace)
        node = BeamNode("kate", net_ticktime=2)
        try:
            node.start()
            assert node.eval(KATE_CODE) == ":ok"
            yield node
        finally:
            node.stop()
            Node.stop()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    handler = Lines()
    logger = logging.getLogger("nodelab")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


@pytest.fixture
def inbox() -> Iterator[None]:
    """The test thread's process, registered as ``pybox`` for kate to write to."""
    register("pybox", self())
    old = Process.flag("trap_exit", True)
    yield
    Process.flag("trap_exit", old)
    unregister("pybox")
    while receive(timeout=0, after=None) is not None:
        pass


def kate_pid(kate: BeamNode, code: str = "self()") -> Pid:
    """A pid of kate's, made by ``code`` there and sent here."""
    kate.eval(f'send({{:pybox, :"{ALEX}"}}, {{:pid, {code}}}); :ok')
    return receive(("pid", Pid), timeout=5)[1]


def collecting_leader() -> tuple[Pid, list[str]]:
    written: list[str] = []
    return start_group_leader(lambda _stream, text: written.append(text)), written


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# --- connecting ---------------------------------------------------------------------------

def test_ping_node_lists_and_epmd_both_ways(kate: BeamNode) -> None:
    assert Node.ping(KATE) == "pong"
    assert kate.eval(f'Node.ping(:"{ALEX}")') == ":pong"
    assert KATE in Node.list()
    assert kate.eval("Node.list()") == f"[:{ALEX}]"
    assert "alex" in epmd_names() and "kate" in epmd_names()


def dial_at_the_same_instant(beam: BeamNode, monkeypatch: pytest.MonkeyPatch) -> str:
    """alex and ``beam`` dial each other with both dials under way at once; returns the
    status alex's acceptor gave the BEAM's dial (``nok``: alex's dial wins, being the
    greater name; ``ok_simultaneous``: the BEAM's wins), after checking the end state.

    The two dials overlap by construction, not by luck: alex's dial is held after its TCP
    connect (alex is then "dialling" the BEAM), the BEAM's ``Node.connect`` starts, and
    alex's name goes out only once alex's acceptor has answered the BEAM's name. Nothing
    of the handshake is replaced: the real code runs, it only waits a moment in between.
    """
    peer_name = beam.name
    decided: list[str] = []
    answered = threading.Event()
    real_initiate, real_status = eh.initiate, eh.simultaneous_status

    def status(me: str, other: str) -> str:
        decided.append(real_status(me, other))
        answered.set()
        return decided[-1]

    def initiate(sock, cookie, me, other, *args, **kwargs):
        if other == peer_name:
            beam.eval(f'me = self(); spawn(fn -> send(me, {{:connected, '
                      f'Node.connect(:"{ALEX}")}}) end); :ok')
            assert answered.wait(10), f"{peer_name} did not dial alex within 10 s"
        return real_initiate(sock, cookie, me, other, *args, **kwargs)

    monkeypatch.setattr(eh, "simultaneous_status", status)
    monkeypatch.setattr(eh, "initiate", initiate)
    try:
        assert Node.connect(peer_name) is True
        assert beam.eval("receive do {:connected, ok} -> ok after 10000 -> :no_answer end") \
            == "true"
    finally:
        monkeypatch.setattr(eh, "initiate", real_initiate)
        monkeypatch.setattr(eh, "simultaneous_status", real_status)
    # One connection, each side sees the other once, and it carries messages both ways.
    assert wait_for(lambda: Node.list().count(peer_name) == 1)
    assert beam.eval(f'Node.list() |> Enum.count(&(&1 == :"{ALEX}"))') == "1"
    assert beam.eval(f'Enum.count(:erlang.system_info(:dist_ctrl), '
                     f'fn {{n, _}} -> n == :"{ALEX}" end)') == "1"
    assert Node.ping(peer_name) == "pong"
    assert beam.eval(f'send({{:pybox, :"{ALEX}"}}, :over_the_one_connection)') == \
        ":over_the_one_connection"
    assert receive("over_the_one_connection", timeout=5) == "over_the_one_connection"
    assert len(decided) == 1
    return decided[0]


def disconnect(beam: BeamNode) -> None:
    Node.disconnect(beam.name)
    assert wait_for(lambda: beam.name not in Node.list())
    assert wait_for(lambda: beam.eval("Node.list()") == "[]")


@pytest.mark.parametrize("name, winner", [("kate", "ok_simultaneous"), ("ada", "nok")])
def test_a_simultaneous_connect_ends_with_one_connection(
        kate: BeamNode, inbox: None, monkeypatch: pytest.MonkeyPatch, name: str,
        winner: str) -> None:
    # kate > alex: the BEAM's dial wins (alex answers ok_simultaneous and gives its own up,
    # kate answers alex nok); ada < alex: alex's dial wins (alex answers ada nok). OTP's
    # rule, the greater name's dial goes on, on both sides.
    beam = kate if name == "kate" else BeamNode(name, net_ticktime=2).start()
    try:
        for _ in range(3):
            disconnect(beam)
            assert dial_at_the_same_instant(beam, monkeypatch) == winner
    finally:
        if beam is not kate:
            beam.stop()
            assert wait_for(lambda: beam.name not in Node.list())


def test_a_wrong_cookie_both_ways(kate: BeamNode, log_lines: list[str]) -> None:
    # alex dials with the wrong cookie: pang; kate logs its own line.
    Node.disconnect(KATE)
    assert wait_for(lambda: KATE not in Node.list())
    Node.set_cookie(KATE, "not_the_cookie")
    try:
        assert Node.ping(KATE) == "pang"
        assert wait_for(lambda: "Invalid challenge reply" in kate.output() + kate.errors())
    finally:
        Node.set_cookie(KATE, COOKIE)
    # kate dials with the wrong cookie: false; alex logs one line, in OTP's words.
    kate.eval(f':erlang.set_cookie(:"{ALEX}", :not_the_cookie)')
    try:
        assert kate.eval(f'Node.connect(:"{ALEX}")') == "false"
    finally:
        kate.eval(f':erlang.set_cookie(:"{ALEX}", :{COOKIE})')
    assert wait_for(lambda: log_lines)
    time.sleep(0.1)
    assert log_lines == [f"** Connection attempt from node {KATE} rejected. Invalid challenge "
                         "reply. **"]
    assert Node.ping(KATE) == "pong"


# --- messages -----------------------------------------------------------------------------

def test_messages_to_pids_and_names_both_ways(kate: BeamNode, inbox: None) -> None:
    shell = kate_pid(kate)
    value = (Atom("from_py"), 1, -2**70, 1.5, "sup?", b"\xff\x00", [1, Atom("a")], {"k": None},
             True, self())
    send(shell, value)
    got = kate.eval("receive do x -> x after 3000 -> :timeout end")
    assert got.startswith('{:from_py, 1, -1180591620717411303424, 1.5, "sup?", <<255, 0>>, '
                          '[1, :a], %{"k" => nil}, true, #PID<'), got
    send(("kate_shell", KATE), Atom("by_name"))
    assert kate.eval("receive do x -> x after 3000 -> :timeout end") == ":by_name"
    # kate to alex: by name and by pid; an unknown name is dropped quietly.
    kate.eval(f'send({{:nobody_here, :"{ALEX}"}}, :lost); send({{:pybox, :"{ALEX}"}}, '
              '{:hi, "there", [1, 2], %{a: 1}})')
    assert receive(("hi", ANY, ANY, ANY), timeout=5) == ("hi", "there", [1, 2], {"a": 1})
    send(shell, (Atom("reply_to"), self()))
    kate.eval("receive do {:reply_to, p} -> send(p, :by_pid) after 3000 -> :none end")
    assert receive("by_pid", timeout=5) == "by_pid"


def test_a_message_with_no_python_form_is_dropped_and_the_connection_lives(
        kate: BeamNode, inbox: None, log_lines: list[str]) -> None:
    kate.eval(f'send({{:pybox, :"{ALEX}"}}, %{{:a => 1, "a" => 2}}); '
              f'send({{:pybox, :"{ALEX}"}}, :after_it)')
    assert receive(timeout=5) == "after_it"  # the map (no dict form) was dropped, alone
    assert KATE in Node.list()
    assert len(log_lines) == 1 and "A message from node kate@localhost was dropped" in log_lines[0]


def test_a_value_with_no_erlang_form_is_refused_at_send(kate: BeamNode, inbox: None) -> None:
    shell = kate_pid(kate)
    with pytest.raises(TermEncodeError, match="function"):
        send(shell, (Atom("f"), lambda: 1))
    with pytest.raises(TermEncodeError, match="set"):
        send(("kate_shell", KATE), {1, 2})
    send(shell, Atom("still_fine"))  # the connection was not hurt
    assert kate.eval("receive do x -> x after 3000 -> :timeout end") == ":still_fine"


# --- links, monitors, exit signals ----------------------------------------------------------

WAITER = "spawn(fn -> receive do :stop -> exit(:boom) end end)"


def test_links_unlink_monitors_and_exit2_from_python(kate: BeamNode, inbox: None) -> None:
    first = kate_pid(kate, WAITER)
    link(first)
    send(first, Atom("stop"))
    assert receive(("EXIT", first, ANY), timeout=5)[2] == "boom"
    second = kate_pid(kate, WAITER)
    ref = monitor(second)
    exit(second, Atom("kill"))  # EXIT2
    assert receive(("DOWN", ref, "process", second, ANY), timeout=5)[4] == "killed"
    gone = monitor(second)  # a monitor of a dead process: noproc
    assert receive(("DOWN", gone, "process", second, ANY), timeout=5)[4] == "noproc"
    third = kate_pid(kate, WAITER)
    link(third)
    unlink(third)  # UNLINK_ID, acknowledged by kate
    send(third, Atom("stop"))
    assert receive(("EXIT", third, ANY), timeout=0.5, after=None) is None
    fourth = kate_pid(kate, WAITER)
    ref = monitor(fourth)
    demonitor(ref)
    send(fourth, Atom("stop"))
    assert receive(("DOWN", ref, ANY, ANY, ANY), timeout=0.5, after=None) is None


def test_links_monitors_and_exit2_from_the_beam(kate: BeamNode, inbox: None) -> None:
    def waiter() -> None:
        message = receive(timeout=10)
        if message == "crash":
            raise ZeroDivisionError("division by zero")
        exit(self(), Atom("boom"))

    for action, expected in (("go", ":boom"), ("crash",
                                                '{:ZeroDivisionError, "division by zero"}')):
        pid = spawn(waiter)
        send(("kate_shell", KATE), (Atom("pid"), pid))
        got = kate.eval(
            'Process.flag(:trap_exit, true); receive do {:pid, p} -> Process.link(p); '
            f'ref = Process.monitor(p); send(p, "{action}"); '
            'a = receive do {:EXIT, ^p, r} -> r after 3000 -> :no_exit end; '
            'b = receive do {:DOWN, ^ref, :process, ^p, r} -> r after 3000 -> :no_down end; '
            '{a, b} after 3000 -> :no_pid end')
        assert got == f"{{{expected}, {expected}}}", got
    victim = spawn(lambda: receive(timeout=10))
    ref = monitor(victim)
    send(("kate_shell", KATE), (Atom("pid"), victim))
    kate.eval("receive do {:pid, p} -> Process.exit(p, :kill) end")
    assert receive(("DOWN", ref, "process", victim, ANY), timeout=5)[4] == "killed"
    # kate monitors a process that is gone: noproc; links to one: noproc.
    send(("kate_shell", KATE), (Atom("pid"), victim))
    assert kate.eval("receive do {:pid, p} -> ref = Process.monitor(p); receive do "
                     "{:DOWN, ^ref, _, _, r} -> r after 3000 -> :none end end") == ":noproc"


def test_noconnection_within_100_ms_of_a_sigkill_both_ways(kate: BeamNode, inbox: None) -> None:
    # A BEAM node dies: alex's link and monitor say noconnection at once.
    with BeamNode("moebi", net_ticktime=2) as moebi:
        moebi.eval(f'send({{:pybox, :"{ALEX}"}}, {{:pid, spawn(fn -> Process.sleep(:infinity) '
                   'end)})')
        pid = receive(("pid", Pid), timeout=5)[1]
        link(pid)
        ref = monitor(pid)
        killed = time.monotonic()
        os.kill(moebi.proc.pid, signal.SIGKILL)
        assert receive(("EXIT", pid, ANY), timeout=2)[2] == "noconnection"
        assert time.monotonic() - killed < 0.1
        assert receive(("DOWN", ref, "process", pid, ANY), timeout=1)[4] == "noconnection"
    # A nodelab node dies: kate's link and monitor say noconnection at once.
    with peer.start("sophie", cookie=COOKIE, eval=(
            "from nodelab import receive, send, spawn\n"
            "from nodelab.dist.term_format import Atom\n"
            "import threading\n"
            "def _go():\n"
            f"    send(('kate_shell', '{KATE}'), (Atom('pid'), spawn(lambda: receive())))\n"
            "threading.Timer(0.2, _go).start()\n")) as sophie:
        assert kate.eval("Process.flag(:trap_exit, true); receive do {:pid, p} -> "
                         "Process.link(p); Process.put(:p, p); Process.monitor(p); :linked "
                         "after 10000 -> :no_pid end") == ":linked"
        os.kill(sophie.os_pid, signal.SIGKILL)
        killed_at = time.time()
        got = kate.eval("p = Process.get(:p); receive do {:EXIT, ^p, r} -> "
                        "{r, :os.system_time(:microsecond)} after 3000 -> :none end")
        assert got.startswith("{:noconnection, "), got
        seen_at = int(got.split(", ")[1].rstrip("}")) / 1e6
        assert seen_at - killed_at < 0.1, seen_at - killed_at
        assert kate.eval("receive do {:DOWN, _, :process, _, r} -> r after 1000 -> :none "
                         "end") == ":noconnection"


# --- spawning across ------------------------------------------------------------------------

def test_the_beam_spawns_python_and_the_print_lands_on_kate(kate: BeamNode) -> None:
    install_router()  # pytest's capture replaced sys.stdout since the node started
    since = len(kate.output())
    kate.eval(f'Node.spawn(:"{ALEX}", :greeter, :hello, ["kate"])')
    assert "hello, kate" in kate.wait_for_output("hello, kate", timeout=5, since=since)
    kate.eval(f'Node.spawn(:"{ALEX}", Greeter, :hi, ["kate"])')
    kate.wait_for_output("hi from the Greeter alias, kate", timeout=5, since=since)
    got = kate.eval(f'{{p, ref}} = Node.spawn_monitor(:"{ALEX}", :greeter, :nope, [1]); '
                    'receive do {:DOWN, ^ref, :process, ^p, r} -> r after 3000 -> :none end')
    assert got == "{:undef, [{:greeter, :nope, [1], []}]}"
    got = kate.eval(f'{{p, ref}} = Node.spawn_monitor(:"{ALEX}", :no_such_module, :f, []); '
                    'receive do {:DOWN, ^ref, :process, ^p, r} -> r after 3000 -> :none end')
    assert got.startswith("{:undef, ")


def test_a_spawn_that_fails_at_once_is_answered_before_its_down(kate: BeamNode) -> None:
    """The BEAM sends a spawn's SPAWN_REPLY before any signal of the new process; a DOWN
    that comes first breaks the connection (noconnection). A function that fails at once
    races its own reply unless the process waits for it: 100 in a row must all say undef."""
    install_router()
    got = kate.eval(
        f'Enum.map(1..100, fn _ -> {{p, ref}} = Node.spawn_monitor(:"{ALEX}", :greeter, :nope, '
        '[1]); receive do {:DOWN, ^ref, :process, ^p, r} -> r after 3000 -> :none end end) '
        '|> Enum.uniq()', timeout=60)
    assert got == "[undef: [{:greeter, :nope, [1], []}]]"  # one distinct reason: undef


def test_python_spawns_on_the_beam_and_the_print_lands_in_the_callers_leader(
        kate: BeamNode, inbox: None) -> None:
    leader, written = collecting_leader()
    me = self()

    def caller() -> None:
        group_leader(leader, self())
        Node.spawn_link(KATE, "Kate", "say_name", [])
        Node.spawn(KATE, "Kate", "say", ["sup?"])
        Node.spawn(KATE, Atom("io"), "format", ["erlang io ~p~n", [[1, 2]]])
        send(me, "spawned")
        receive(timeout=5, after=None)

    spawn(caller)
    receive("spawned", timeout=5)
    assert wait_for(lambda: len(written) >= 3), written
    assert sorted(written) == sorted(["Kate here\n", "kate says sup?\n", "erlang io [1, 2]\n"])
    with pytest.raises(TypeError, match="module, a function name and a list of arguments"):
        Node.spawn(KATE, lambda: print("no"))


def test_a_nodelab_group_leader_answers_the_erlang_io_protocol(kate: BeamNode) -> None:
    leader, written = collecting_leader()
    send(("kate_shell", KATE), (Atom("pid"), leader))
    got = kate.eval('receive do {:pid, gl} -> {IO.puts(gl, "direct"), :io.format(gl, '
                    '"f ~p ~s~n", [[1], "x"]), IO.write(gl, [?a, "b", [?c]]), '
                    ':io.columns(gl), :io.request(gl, {:put_chars, "old form"})} '
                    'after 3000 -> :none end')
    assert got == "{:ok, :ok, :ok, {:error, :enotsup}, :ok}", got
    assert written == ["direct\n", "f [1] x\n", "abc", "old form"]


def test_erpc_and_rpc_into_python(kate: BeamNode) -> None:
    assert kate.eval(f':erpc.call(:"{ALEX}", :greeter, :add, [2, 3])') == "5"
    assert kate.eval(f':rpc.call(:"{ALEX}", :greeter, :add, [2, 3])') == "5"
    got = kate.eval(f'try do :erpc.call(:"{ALEX}", :greeter, :fail, []) rescue e -> '
                    'e.original end')
    assert got == '{:exception, {:ZeroDivisionError, "division by zero"}, []}', got
    assert kate.eval(f':rpc.call(:"{ALEX}", :greeter, :nope, [])') == (
        "{:badrpc, {:EXIT, {:undef, [{:greeter, :nope, [], []}]}}}")


# --- GenServer calls ------------------------------------------------------------------------

class Doubler(gen_server.Server):
    def handle_call(self, request, caller):
        return (Atom("doubled"), request * 2)


def test_genserver_calls_both_ways(kate: BeamNode) -> None:
    def doubler() -> None:
        register("doubler")
        gen_server.serve(Doubler())

    pid = spawn(doubler)
    assert wait_for(lambda: Process.info(pid) is not None)
    time.sleep(0.05)
    try:
        assert kate.eval(f'GenServer.call({{:doubler, :"{ALEX}"}}, 21)') == "{:doubled, 42}"
        assert server.call(("counter", KATE), Atom("get")) == 42
        assert server.call(("counter", KATE), (Atom("add"), 8)) == 50
        caller, tag = server.call(("counter", KATE), Atom("from"))  # OTP 24+ alias reply tag
        assert caller == self() and isinstance(tag, ImproperList) and tag.items == ["alias"]
    finally:
        exit(pid, "kill")


# --- ticks ----------------------------------------------------------------------------------

def until(check, timeout: float = 5.0):
    """``check()``'s first truthy value, asked every 10 ms; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(0.01)
    return value


def test_process_info_of_a_beam_pid_asks_the_beam(kate: BeamNode, inbox: None) -> None:
    # Elixir's Process.info/1 raises "not a local pid" here; nodelab asks kate, as
    # :rpc.call(node(pid), :erlang, :process_info, [pid, items]) does.
    pid = kate_pid(kate, "(napper = spawn(fn -> Process.flag(:trap_exit, true); receive do "
                         ":stop -> :ok end end); Process.register(napper, :napper); "
                         "send(napper, :kept); napper)")
    info = until(lambda: (i := Process.info(pid)) and i["trap_exit"] and
                 i["status"] == "waiting" and i)
    assert set(info) == {"status", "message_queue_len", "links", "group_leader",
                         "registered_name", "trap_exit"}
    assert (info["message_queue_len"], info["links"]) == (1, [])  # :kept waits there
    assert info["registered_name"] == "napper" and isinstance(info["registered_name"], Atom)
    assert isinstance(info["group_leader"], Pid) and info["group_leader"].node == KATE
    assert Process.alive(pid)
    nameless = kate_pid(kate, "spawn(fn -> receive do :stop -> :ok end end)")
    assert Process.info(nameless)["registered_name"] is None  # the BEAM's []
    for each in (pid, nameless):
        send(each, Atom("stop"))
        until(lambda each=each: Process.info(each) is None)
        assert not Process.alive(each)


def test_a_quiet_connection_survives_ticks_at_net_ticktime_2(kate: BeamNode, inbox: None) -> None:
    """kate's net_ticktime is 2 s. First alex ticks every 0.5 s (its tick_time is 2); then,
    reconnected with a tick_time of 40 s (a tick every 10 s of its own), alex still answers
    each of kate's ticks, so kate never drops a quiet alex either way."""
    dist = P.current_transport()
    for tick_time in (2.0, 40.0):
        Node.disconnect(KATE)
        assert wait_for(lambda: KATE not in Node.list())
        dist.tick_time = tick_time
        try:
            assert Node.ping(KATE) == "pong"
            Node.monitor(KATE)
            kate.eval(f'Node.monitor(:"{ALEX}", true)')
            try:
                time.sleep(3.5)  # more than 1.25 x net_ticktime, nothing sent but ticks
                assert receive(("nodedown", KATE), timeout=0, after=None) is None
                assert kate.eval("receive do {:nodedown, n} -> n after 0 -> :up end") == ":up"
                assert KATE in Node.list()
            finally:
                Node.monitor(KATE, False)
                kate.eval(f'Node.monitor(:"{ALEX}", false)')
        finally:
            dist.tick_time = 2.0
    Node.disconnect(KATE)
    assert wait_for(lambda: KATE not in Node.list())
    assert Node.ping(KATE) == "pong"
