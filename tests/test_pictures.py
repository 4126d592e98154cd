"""Pictures of messages and supervision trees, drawn from real nodes.

The test process is a node; its peers are real child processes (``nodelab.tools.peer``); the
magics run in a real kernel driven by nbclient, as nbval drives the lessons.
"""

from __future__ import annotations

import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

from nodelab import ANY, Node, Process, exit, receive, register, self, send, spawn_link
from nodelab.errors import NodelabError
from nodelab.jupyter.picture_magics import PictureMagics
from nodelab.otp import Application, Supervisor, TaskSupervisor
from nodelab.pictures import app_tree, record_messages, supervision_tree, trace
from nodelab.tools import peer

COOKIE = "secret_token"


@pytest.fixture(scope="module")
def this_node():
    """This test process as a node: the suite's node if one runs already, else our own."""
    if Node.alive():
        yield Node.self()
        return
    name = Node.start("picalex", cookie=COOKIE, tick_time=1.0)
    yield name
    Node.stop()


@pytest.fixture(scope="module")
def kate(this_node, tmp_path_factory):
    node = peer.start("pickate", cookie=Node.get_cookie(), tick_time=1.0,
                      log_dir=tmp_path_factory.mktemp("peers"))
    yield node.node
    node.stop()


def short(node: str) -> str:
    return node.split("@")[0]


def ping_pong(kate: str) -> tuple:
    def pong() -> None:
        message = receive()
        send(message[1], ("pong", self()))

    pid = Node.spawn(kate, pong)
    send(pid, ("ping", self()))
    return receive(("pong", ANY), timeout=5)


def test_ping_pong_across_two_nodes(this_node, kate) -> None:
    diagram = trace(ping_pong, kate)
    me, her = short(this_node), short(kate)
    assert diagram.result[0] == "pong"
    assert [(p.node, p.label) for p in diagram.participants] == [
        (this_node, f"{me} shell"), (kate, f"{her} P1")]
    assert [tuple(m) for m in diagram.messages] == [
        (f"{me} shell", f"{her} P1", "ping"),
        (f"{her} P1", f"{me} shell", "pong"),
    ]
    assert diagram.mermaid == (
        "sequenceDiagram\n"
        "    autonumber\n"
        f"    box {this_node}\n"
        f"        participant p1 as {me} shell\n"
        "    end\n"
        f"    box {kate}\n"
        f"        participant p2 as {her} P1\n"
        "    end\n"
        "    p1->>p2: ping\n"
        "    p2->>p1: pong\n"
    )
    assert diagram.markdown.startswith("```mermaid\nsequenceDiagram\n")
    bundle = diagram._repr_mimebundle_()
    assert bundle["text/plain"] == diagram.text == str(diagram)
    assert f"1. {me} shell -> {her} P1" in diagram.text


def test_the_same_exchange_draws_the_same_picture(this_node, kate) -> None:
    first, second = trace(ping_pong, kate), trace(ping_pong, kate)
    assert first.mermaid == second.mermaid
    assert first.text == second.text
    assert "#PID" not in first.markdown + first.text


def test_names_prints_and_a_node_reached_only_during_the_recording(
        this_node, kate, tmp_path) -> None:
    # moebi's echo answers whoever asks; kate's relay prints (on our node: its group
    # leader is ours) and forwards to moebi, which this node has never talked to.
    moebi = peer.start("picmoebi", cookie=Node.get_cookie(), tick_time=1.0, log_dir=tmp_path,
                       eval="def _echo():\n"
                            "    register('echo')\n"
                            "    while True:\n"
                            "        tag, sender, text = receive()\n"
                            "        send(sender, ('echoed', text))\n"
                            "spawn(_echo)\n")
    try:
        target = moebi.node

        def relay() -> None:
            register("relay")  # runs on kate: names resolve there
            while True:
                message = receive()
                print("relaying", message[2])
                send(("echo", target), message)

        relay_pid = Node.spawn(kate, relay)
        deadline = time.monotonic() + 5
        while (Process.info(relay_pid) or {}).get("registered_name") != "relay":
            assert time.monotonic() < deadline, "the relay did not register on kate"
            time.sleep(0.01)
        assert moebi.node not in Node.list()
        with record_messages("relay") as recording:
            send(("relay", kate), ("relay", self(), "hi"))
            assert receive(("echoed", ANY), timeout=5) == ("echoed", "hi")
        diagram = recording.diagram
        me, her, third = short(this_node), short(kate), short(moebi.node)
        assert [tuple(m) for m in diagram.messages] == [
            (f"{me} shell", f"{her} relay", "relay"),
            (f"{her} relay", f"{me} group leader", "io_request 'relaying hi'"),
            (f"{me} group leader", f"{her} relay", "io_reply"),
            (f"{her} relay", f"{third} echo", "relay"),
            (f"{third} echo", f"{me} shell", "echoed"),
        ]
        assert [p.node for p in diagram.participants] == [
            this_node, this_node, kate, moebi.node]
        assert diagram.mermaid.startswith("sequenceDiagram\n    title relay\n")
        assert f"    box {moebi.node}\n        participant p4 as {third} echo\n" \
            in diagram.mermaid
        exit(relay_pid, "kill")
    finally:
        moebi.stop()


def test_nothing_sent_is_said_plainly(this_node) -> None:
    with record_messages() as recording:
        pass
    assert recording.diagram.messages == []
    assert recording.diagram.mermaid == ""
    assert "no messages were sent" in recording.diagram.text


def _worker() -> None:
    receive()


def test_the_tree_of_a_small_supervisor(this_node) -> None:
    _, sup = Supervisor.start_link(
        [(TaskSupervisor, {"name": "Pics.Tasks"}),
         {"id": "worker", "start": (spawn_link, [_worker])}],
        strategy="rest_for_one", name="Pics.Sup")
    try:
        TaskSupervisor.start_child("Pics.Tasks", _worker)
        tree = supervision_tree("Pics.Sup")
        assert tree.text == (
            f"Pics.Sup  (supervisor, rest_for_one)  {this_node}\n"
            "├── Pics.Tasks  (supervisor, TaskSupervisor, one_for_one)\n"
            "│   └── task P1  (worker)\n"
            "└── worker  (worker)"
        )
        assert tree.mermaid == (
            "graph TD\n"
            f'    subgraph s1 ["{this_node}"]\n'
            "        direction TB\n"
            '        n1[["Pics.Sup<br/>rest_for_one"]]\n'
            '        n2[["Pics.Tasks<br/>TaskSupervisor, one_for_one"]]\n'
            '        n3("task P1")\n'
            '        n4("worker")\n'
            "    end\n"
            "    n1 --> n2\n"
            "    n1 --> n4\n"
            "    n2 --> n3\n"
        )
        assert supervision_tree(sup).text == tree.text  # by PID, as start_link gave it
    finally:
        Supervisor.stop(sup)


def test_the_tree_of_a_supervisor_on_another_node(this_node, kate) -> None:
    def owner() -> None:
        from nodelab.otp import Supervisor, TaskSupervisor

        Supervisor.start_link([(TaskSupervisor, {"name": "Far.Tasks"})],
                              strategy="one_for_all", name="Far.Sup")
        send(parent, "started")
        receive()

    parent = self()
    pid = Node.spawn(kate, owner)
    try:
        assert receive("started", timeout=5) == "started"
        tree = supervision_tree("Far.Sup", kate)
        assert tree.text == (f"Far.Sup  (supervisor, one_for_all)  {kate}\n"
                             "└── Far.Tasks  (supervisor, TaskSupervisor, one_for_one)")
        assert supervision_tree(("Far.Sup", kate)).text == tree.text
        with pytest.raises(NodelabError, match="no process is registered as 'Nope' on"):
            supervision_tree(("Nope", kate))
    finally:
        exit(pid, "kill")


def test_the_tree_of_an_application(this_node, tmp_path, monkeypatch) -> None:
    # An application made by `nodelab new --sup` with a Task supervisor added to its tree,
    # as a learner makes chat in lesson 3.
    subprocess.run([sys.executable, "-m", "nodelab", "new", "picapp", "--sup"], cwd=tmp_path,
                   check=True, capture_output=True, timeout=30)
    application = tmp_path / "picapp" / "picapp" / "application.py"
    application.write_text(application.read_text().replace(
        "from nodelab.otp import Supervisor",
        "from nodelab.otp import Supervisor, TaskSupervisor").replace(
        "    children = [\n",
        '    children = [\n        (TaskSupervisor, {"name": "Picapp.TaskSupervisor"}),\n'))
    monkeypatch.setenv("NODELAB_APP_PATH", str(tmp_path))
    Application.start("picapp")
    try:
        assert app_tree("picapp").text == (
            "application picapp\n"
            f"Picapp.Supervisor  (supervisor, one_for_one)  {this_node}\n"
            "└── Picapp.TaskSupervisor  (supervisor, TaskSupervisor, one_for_one)")
    finally:
        Application.stop("picapp")
    with pytest.raises(NodelabError, match="the application 'picapp' is not running"):
        app_tree("picapp")


def test_every_magic_explains_itself() -> None:
    assert "%%sequence [TITLE]" in PictureMagics.sequence.__doc__
    assert "%supervision_tree NAME [NODE]" in PictureMagics.supervision_tree_magic.__doc__


# --- in a real kernel ---------------------------------------------------------------------------

def _outputs(cell, kind: str) -> list:
    return [o for o in cell.outputs if o.output_type == kind]


def test_the_magics_in_a_kernel(kate) -> None:
    cookie = Node.get_cookie()
    sources = [
        'get_ipython().extension_manager.load_extension("nodelab")\n'
        "from nodelab.jupyter.picture_magics import PictureMagics\n"
        "get_ipython().register_magics(PictureMagics)",
        f"%node --sname pickernel --cookie {cookie}",
        f"%%sequence Ping pong\n"
        f'pid = Node.spawn("{kate}", lambda: send(receive()[1], ("pong", self())))\n'
        'send(pid, ("ping", self()))\n'
        "print(receive(timeout=5)[0])",
        "from nodelab.otp import Supervisor\n"
        '_, sup = Supervisor.start_link([{"id": "worker", "start": (spawn_link, '
        '[lambda: receive()])}], name="Pics.Sup")',
        "%supervision_tree Pics.Sup",
        "%supervision_tree",
        f"%supervision_tree Nope {kate}",
        f"%%sequence\n%spawn_link {kate} print('Hi from kate')",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True).execute()
    cells = notebook.cells

    sequence = cells[2]
    assert [o.text for o in _outputs(sequence, "stream")] == ["pong\n"]
    [picture] = _outputs(sequence, "display_data")
    markdown = picture.data["text/markdown"]
    assert markdown.startswith("```mermaid\nsequenceDiagram\n    title Ping pong\n")
    assert "participant p1 as pickernel shell" in markdown
    assert "p1->>p2: ping\n    p2->>p1: pong\n```" in markdown
    assert "1. pickernel shell -> pickate P1" in picture.data["text/plain"]

    [tree] = _outputs(cells[4], "display_data")
    assert tree.data["text/markdown"].startswith("```mermaid\ngraph TD\n")
    assert '[["Pics.Sup<br/>one_for_one"]]' in tree.data["text/markdown"]

    errors = [o.text for o in _outputs(cells[5], "stream") if o.name == "stderr"]
    assert errors == ["UsageError: usage: %supervision_tree NAME [NODE], e.g. "
                      "%supervision_tree Chat.Supervisor kate\n"]
    errors = [o.text for o in _outputs(cells[6], "stream") if o.name == "stderr"]
    assert len(errors) == 1 and "no process is registered as 'Nope' on pickate" in errors[0]

    # A remote print inside the cell: its text first, then the picture of its journey.
    spawned = cells[7]
    kinds = [o.output_type for o in spawned.outputs]
    assert kinds == ["stream", "execute_result", "display_data"]
    assert spawned.outputs[0].text == "Hi from kate\n"
    lines = [" ".join(line.split()) for line in spawned.outputs[2].data["text/plain"].splitlines()]
    assert lines == [
        "Message sequence: 2 messages, 2 processes on 2 nodes",
        "pickernel@localhost: pickernel group leader",
        "pickate@localhost: pickate P1",
        "1. pickate P1 -> pickernel group leader io_request 'Hi from kate'",
        "2. pickernel group leader -> pickate P1 io_reply",
    ]
    assert not any(_outputs(cell, "error") for cell in cells)
