"""Shipped functions find their global names on the node where they run."""

from __future__ import annotations

import json
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
