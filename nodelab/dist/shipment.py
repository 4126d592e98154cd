"""Encoding messages for the wire, and shipping functions to the node that runs them.

Messages are pickled. Functions are the interesting part. On the BEAM a closure typed in
iex runs anywhere, and the module names it calls are looked up *on the node where it runs*:
``fn -> Kate.say_name end`` works on kate, which defines ``Kate``, even when alex does not.
nodelab does the same for Python: a function that cannot be found by module and name on the
other side (a lambda, a function typed in a notebook or a shell, a nested function) travels
as its compiled code plus the values its closure captured, and is rebuilt on the receiving
node with *that node's namespace* as its globals. So ``lambda: Kate.say_name()`` calls kate's
``Kate``, and fails there with a ``NameError`` when kate has none — like Elixir's ``:undef``.

Functions of importable modules (``chat.receive_message``) travel by reference and are
imported where they run, like calls to compiled Elixir modules.

A *shipment* is what a remote spawn or a task runs, in one of two forms: ``("fn", fn,
args)`` or ``("mfa", module, fun, args)``. :func:`build` makes one (``Node.spawn``,
``Task.async_``, ``TaskSupervisor.async_``), :func:`run` runs it on the node where it lands
(decoding it there first when it travelled encoded), :func:`describe` names it.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import marshal
import pickle
import re
import sys
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from nodelab.errors import CodeVersionMismatch

#: Code objects only load on the Python that compiled them; this tag says which one did.
PYTHON_TAG = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}"
_MAGIC = importlib.util.MAGIC_NUMBER

_namespace_provider: list[Callable[[], dict[str, Any]]] = [lambda: sys.modules["__main__"].__dict__]


def set_namespace_provider(provider: Callable[[], dict[str, Any]]) -> None:
    """Choose the namespace in which shipped functions look up their global names.

    A kernel node gives its interactive namespace (``get_ipython().user_ns``); a script
    keeps ``__main__``.
    """
    _namespace_provider[0] = provider


def node_namespace() -> dict[str, Any]:
    """The namespace where functions shipped to this node resolve their global names."""
    return _namespace_provider[0]()


def _findable_by_reference(fn: types.FunctionType) -> bool:
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        return False
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) is None:
        return False
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            return False
    return target is fn


def _rebuild_function(tag: str, magic: bytes, code_bytes: bytes, name: str, qualname: str,
                      defaults: tuple | None, kwdefaults: dict | None,
                      closure_values: tuple | None) -> types.FunctionType:
    if tag != PYTHON_TAG or magic != _MAGIC:
        raise CodeVersionMismatch(
            f"cannot run a function shipped from {tag} on {PYTHON_TAG}: nodes on different "
            "Python versions cannot share code, so call a module function by name instead, "
            "e.g. Node.spawn(node, 'chat', 'receive_message', ['hi'])"
        )
    code = _codes.get(code_bytes)
    if code is None:
        code = marshal.loads(code_bytes)
        if _lazy:
            _complete_prelude_for(code)
        if len(code_bytes) <= _CODE_CACHE_BYTES:
            if len(_codes) >= _CODE_CACHE_SIZE:
                _codes.clear()  # a bound, not a policy: a node runs a handful of functions
            _codes[code_bytes] = code
    closure = None
    if closure_values is not None:
        closure = tuple(types.CellType(value) for value in closure_values)
    fn = types.FunctionType(code, node_namespace(), name, defaults, closure)
    fn.__qualname__ = qualname
    fn.__kwdefaults__ = kwdefaults
    return fn


# Code objects rebuilt here, by their marshalled bytes, and the bytes of code objects
# shipped from here, by the code object's identity. A function shipped again (every
# Node.spawn of the same lambda, every task) then costs no marshal call on either side.
# Sharing a code object is safe: it is immutable, every ``def`` run in a loop shares one
# already, and what differs between two functions made from it — globals, closure cells,
# defaults — is given to each new function object, never stored in the code. Equal bytes
# are an equal code object (marshal writes every field of it), so the receiving side
# cannot confuse two different functions; the sending side keys by ``id`` and checks the
# code object itself (held by the entry, so its id cannot be reused while it is there).
_codes: dict[bytes, types.CodeType] = {}
_code_bytes: dict[int, tuple[types.CodeType, bytes]] = {}
_CODE_CACHE_SIZE = 256
_CODE_CACHE_BYTES = 64 * 1024  # a larger code object is marshalled each time


def _marshalled(code: types.CodeType) -> bytes:
    entry = _code_bytes.get(id(code))
    if entry is not None and entry[0] is code:
        return entry[1]
    data = marshal.dumps(code)
    if len(data) <= _CODE_CACHE_BYTES:
        if len(_code_bytes) >= _CODE_CACHE_SIZE:
            _code_bytes.clear()
        _code_bytes[id(code)] = (code, data)
    return data


def _function_reduction(fn: types.FunctionType):
    closure_values = None
    if fn.__closure__ is not None:
        try:
            closure_values = tuple(cell.cell_contents for cell in fn.__closure__)
        except ValueError:  # an empty cell: a name assigned after the function was made
            raise pickle.PicklingError(
                f"cannot ship {fn.__qualname__}: it captures a variable that has no value yet"
            ) from None
    return (
        _rebuild_function,
        (PYTHON_TAG, _MAGIC, _marshalled(fn.__code__), fn.__name__, fn.__qualname__,
         fn.__defaults__, fn.__kwdefaults__, closure_values),
    )


class _Pickler(pickle.Pickler):
    # The code-shipping pickler. The C pickler consults reducer_override for every object
    # but the atoms (None, bools, ints, floats, str, bytes): one Python call per container.
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.FunctionType and not _findable_by_reference(obj):
            return _function_reduction(obj)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "__main__":
            # A class or function defined in a notebook or script: look in this node's own
            # namespace, where such names live here.
            namespace = node_namespace()
            try:
                target: Any = namespace[name.split(".")[0]]
                for part in name.split(".")[1:]:
                    target = getattr(target, part)
                return target
            except (KeyError, AttributeError):
                raise pickle.UnpicklingError(
                    f"{name} is not defined on this node: define it here too, or send data "
                    "that only uses importable classes"
                ) from None
        return super().find_class(module, name)


_PROTOCOL = pickle.HIGHEST_PROTOCOL
# Every reference to a notebook's or a script's own name carries the module name
# ``__main__`` in the pickle (at least once, before the memo can stand in for it). Its
# absence proves that C pickle and this module's picklers agree on the bytes.
_MAIN = b"__main__"
_plain_dumps = pickle.dumps
_plain_loads = pickle.loads


def _ship(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=_PROTOCOL).dump(obj)
    return buffer.getvalue()


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` for another node; functions without an importable name travel as code.

    Most messages are plain data — tuples, strings, numbers, PIDs — and take C ``pickle``
    as it is (a PID encodes as its four fields). The code-shipping pickler runs only when
    the message may carry code: a shipment from :func:`build` (``("fn", fn, args)``), a
    function C pickle cannot name (a lambda, a nested function: it raises), or a name of
    ``__main__`` (a function typed in a notebook, which must travel as code, not as a name
    the other node may lack). Either way the bytes mean the same on the other side.
    """
    if type(obj) is tuple and obj and obj[0] == "fn":
        return _dumps_shipment(obj)
    try:
        data = _plain_dumps(obj, _PROTOCOL)
    except Exception:  # noqa: BLE001 - whatever C pickle refuses, the shipping pickler decides
        return _ship(obj)
    return _ship(obj) if _MAIN in data else data


class _ShippedFunction:
    """Stands in for a function that travels as code, so that C ``pickle`` can encode a
    shipment: it reduces to what the code-shipping pickler writes for the function."""

    __slots__ = ("reduction",)

    def __init__(self, reduction: tuple) -> None:
        self.reduction = reduction

    def __reduce_ex__(self, protocol: object) -> tuple:
        return self.reduction


def _dumps_shipment(shipment: tuple) -> bytes:
    # ("fn", fn, args): the function is replaced by its reduction and the rest is left to C
    # pickle — the same bytes' meaning as the code-shipping pickler's, without its Python
    # call per object. Whatever else in it C pickle refuses (a lambda among the captured
    # values) or names in ``__main__`` (a notebook's class or function) takes that pickler.
    fn = shipment[1]
    if type(fn) is not types.FunctionType or len(shipment) != 3:
        return _ship(shipment)
    try:
        if not _findable_by_reference(fn):
            fn = _ShippedFunction(_function_reduction(fn))
        data = _plain_dumps((shipment[0], fn, shipment[2]), _PROTOCOL)
    except Exception:  # noqa: BLE001 - whatever C pickle refuses, the shipping pickler decides
        return _ship(shipment)
    return _ship(shipment) if _MAIN in data else data


def loads(data: bytes) -> Any:
    """Decode what :func:`dumps` made, resolving shipped code in this node's namespace.

    Only a pickle that names ``__main__`` needs this node's namespace (``find_class``);
    the rest is C ``pickle.loads``.
    """
    if type(data) is not bytes:
        data = bytes(data)  # a memoryview's ``in`` compares items, not a substring
    if _MAIN in data:
        return _Unpickler(io.BytesIO(data)).load()
    return _plain_loads(data)


def module_name(module: Any) -> str | None:
    """The name a module, class or module name is known by on every node (what
    :func:`import_function` looks up there); None when ``module`` is none of these."""
    if isinstance(module, types.ModuleType):
        return module.__name__
    if isinstance(module, type):
        if module.__module__ in ("__main__", "builtins"):
            return module.__qualname__
        return f"{module.__module__}.{module.__qualname__}"
    if isinstance(module, str):
        return module
    return None


def import_function(module: str, function: str) -> Callable[..., Any]:
    """Find ``module.function`` for the module/function/args forms of spawn and tasks.

    ``module`` is first looked up in this node's namespace (a class ``Kate`` typed in kate's
    notebook plays the part of a module defined in kate's iex), then imported.

    A capitalised name is an Elixir alias, and a Python module is named the way Elixir names
    the *file* of a module (``Macro.underscore``): ``"Chat"`` is the module ``chat``,
    ``"MyApp.Chat"`` is ``my_app.chat``. So the chat app calls itself ``"Chat"``, as Elixir
    does, and the same call runs ``chat.receive_message`` on a Python node and
    ``Elixir.Chat.receive_message`` on an Elixir one. A module really named ``Chat`` is used
    when there is no ``chat``.
    """
    namespace = node_namespace()
    path = function.split(".")
    if module == "__main__":
        head, path = path[0], path[1:]
        if head not in namespace:
            raise NameError(f"name '{head}' is not defined on this node")
        target: Any = namespace[head]
    elif module.split(".")[0] in namespace:
        parts = module.split(".")
        target = namespace[parts[0]]
        path = parts[1:] + path
    else:
        target = _import_module(module)
    for part in path:
        target = getattr(target, part)
    return target


def _underscore(alias: str) -> str:
    # Elixir's Macro.underscore, per segment: MyApp.Chat -> my_app.chat, HTTPClient ->
    # http_client.
    return ".".join(
        re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", part).lower()
        for part in alias.split("."))


def _import_module(name: str) -> types.ModuleType:
    loaded = sys.modules.get(name)
    if loaded is not None:
        return loaded
    underscored = _underscore(name)
    if underscored == name:
        return importlib.import_module(name)
    # The underscored module first: it is what an alias means (and then a name already
    # imported costs one dict lookup, not a search of sys.path for ``Chat``).
    try:
        return importlib.import_module(underscored)
    except ModuleNotFoundError as missing:
        if not _is_prefix(missing.name, underscored):
            raise  # the module exists but imports something missing: that is its error
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as missing:
        if not _is_prefix(missing.name, name):
            raise
        raise ModuleNotFoundError(
            f"No module named {underscored!r} (the Python module of the Elixir alias "
            f"{name!r}), nor {name!r}", name=underscored) from None


def _is_prefix(missing: str | None, name: str) -> bool:
    # ModuleNotFoundError.name is the first package of ``name`` that is missing, or the
    # name of whatever a found module failed to import.
    return missing is not None and (name == missing or name.startswith(missing + "."))


# --- shipments: what a remote spawn or a task runs ---------------------------------------------

def build(fn_or_module: Any, fun: str | None = None, args: Any = None, *,
          example: str = "Task.async_(chat, 'receive_message', ['hi'])") -> tuple:
    """``("fn", fn, args)`` or ``("mfa", module_name, fun, args)``: what a process will run.

    Either a function (``lambda: Kate.say_name()``) and its arguments, or a module (a module
    object, a class or a module name), a function name and a list of arguments. ``example``
    shows the second form in the error about a bad module.
    """
    if fun is None:
        if not callable(fn_or_module):
            raise TypeError(f"{fn_or_module!r} is not a function: pass a function or a lambda, "
                            "or a module, a function name and a list of arguments")
        return ("fn", fn_or_module, tuple(args or ()))
    if not isinstance(fun, str):
        raise TypeError(f"the function name must be a string like 'receive_message', not {fun!r}")
    if args is not None and not isinstance(args, (list, tuple)):
        raise TypeError(f"args must be a list of arguments, like ['hi'], not {args!r}")
    module = fn_or_module
    if isinstance(module, type) and module.__module__ not in ("__main__", "builtins"):
        # A class of an importable module: import the module, then find Class.fun in it.
        return ("mfa", module.__module__, f"{module.__qualname__}.{fun}", list(args or ()))
    name = module_name(module)
    if not name:  # an empty name is no module either
        raise TypeError(
            f"{module!r} is not a module: pass a function, or a module (a module object, a "
            f"class or a module name) with a function name and a list of arguments, like "
            f"{example}")
    return ("mfa", name, fun, list(args or ()))


def describe(payload: tuple) -> str:
    """``chat.receive_message/1``: how errors and reprs name what a shipment runs."""
    if payload[0] == "mfa":
        return f"{payload[1]}.{payload[2]}/{len(payload[3])}"
    fn = payload[1]
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if "<locals>" in name or "<lambda>" in name:
        return f"{getattr(fn, '__name__', name)}/{len(payload[2])}"  # <lambda>/0
    module = getattr(fn, "__module__", None)
    prefix = f"{module}." if module and module != "__main__" else ""
    return f"{prefix}{name}/{len(payload[2])}"


def resolve(payload: Any) -> tuple[Callable[..., Any], tuple]:
    """Turn a shipment (or its encoded bytes) into ``(function, args)`` *on this node*."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        payload = loads(payload)
    if payload[0] == "mfa":
        _, module, fun, args = payload
        return import_function(module, fun), tuple(args)
    return payload[1], tuple(payload[2])


def run(payload: Any) -> Any:
    """Run a shipment here and return what it returned.

    Call it in the process that runs it: a function that cannot be rebuilt or found here
    (another Python version, a module this node lacks) is then that process's crash, which
    reaches whoever is linked to it or awaits it.
    """
    fn, args = resolve(payload)
    return fn(*args)


# --- the prelude --------------------------------------------------------------------------------

#: The prelude: names every node's namespace has, like the functions of Elixir's ``Kernel``
#: that iex has everywhere, so a function shipped to a node can call ``send`` or ``receive``
#: there without that node importing them first. The package chooses them from its public
#: surface (``nodelab.PRELUDE``) and hands them down: they come from every layer, and this
#: module sits below most of them.
#:
#: Some of them are *lazy*: given as a function that imports them (``Task`` and the other
#: OTP names, ``Atom``), because a node kernel would otherwise import the OTP layer and the
#: Erlang term codec before it is ready, for names most of its cells never use. A lazy name
#: is imported the first time a namespace needs it: when a function shipped here names it
#: (:func:`_rebuild_function`), when the owner of a deferred namespace says so (the kernel
#: extension, before a cell that names it or before the first cell a person typed:
#: :func:`complete_prelude`), or at once when :func:`install_prelude` fills a namespace that
#: nobody completes later (a script's ``__main__``).
_prelude: dict[str, Any] = {}
_lazy: dict[str, Callable[[], Any]] = {}
# Namespaces given their prelude before its lazy names were imported, by id (a namespace is
# a dict, which cannot be weakly referenced; the dict is kept alive here, and there are one
# or two per node: the kernel's or ``__main__``'s).
_deferred: dict[int, dict[str, Any]] = {}
# Namespaces whose owner completes them (see defer_prelude), by id.
_completed_by_owner: dict[int, dict[str, Any]] = {}
_prelude_lock = threading.RLock()


def set_prelude(values: Mapping[str, Any], lazy: Mapping[str, Callable[[], Any]] | None = None
                ) -> None:
    """Give the names and objects of the prelude (``nodelab`` does, on import); ``lazy``
    maps more names to functions that import and return them, called on first need."""
    with _prelude_lock:
        _prelude.clear()
        _prelude.update(values)
        _lazy.clear()
        _lazy.update(lazy or {})


def defer_prelude(namespace: dict[str, Any]) -> None:
    """Promise that whoever owns ``namespace`` calls :func:`complete_prelude` before code it
    runs could need a lazy name (a kernel: before each cell), so that :func:`install_prelude`
    gives it the names at hand and leaves the lazy ones for later."""
    with _prelude_lock:
        _completed_by_owner[id(namespace)] = namespace


def install_prelude(namespace: dict[str, Any]) -> None:
    """Add the prelude's names to ``namespace`` where it has none of its own."""
    if not _prelude and not _lazy:
        raise RuntimeError("the prelude is not set: import nodelab first")
    with _prelude_lock:
        for name, value in _prelude.items():
            namespace.setdefault(name, value)
        if not _lazy:
            return
        _deferred[id(namespace)] = namespace
        if id(namespace) not in _completed_by_owner:
            complete_prelude()


def complete_prelude(names: Any = None) -> None:
    """Import the lazy names of the prelude that ``names`` holds (every one when None) and
    add them to each namespace that got its prelude without them."""
    if not _lazy:  # everything is imported already: the common case, one check
        return
    with _prelude_lock:
        wanted = [name for name in (_lazy if names is None else names) if name in _lazy]
        for name in wanted:
            _prelude[name] = _lazy[name]()  # an import that fails leaves the name lazy
            del _lazy[name]
        if not wanted:
            return
        for namespace in _deferred.values():
            for name in wanted:
                namespace.setdefault(name, _prelude[name])
        if not _lazy:
            _deferred.clear()


def lazy_prelude_names() -> frozenset[str]:
    """The names of the prelude not imported yet (empty once all of them are)."""
    return frozenset(_lazy)


def _complete_prelude_for(code: types.CodeType) -> None:
    # A rebuilt function finds its globals in this node's namespace: the lazy names its code
    # (or a function defined inside it) looks up must be there before it runs.
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(const for const in current.co_consts if type(const) is types.CodeType)
    if not names.isdisjoint(_lazy):
        complete_prelude(names)
