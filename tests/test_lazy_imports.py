"""``import nodelab`` leaves the OTP layer and the Erlang term codec for their first use.

A node kernel imports nodelab before it is ready, and most of its cells never touch
``Task`` or ``Atom``: the package imports them on first use, through a module
``__getattr__``, and the prelude hands them to a namespace when it needs them. Each check
runs in a fresh interpreter, where nothing else has imported them yet.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str) -> None:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_import_nodelab_leaves_otp_and_the_term_codec_for_first_use() -> None:
    run_fresh("""
        import sys
        import nodelab
        lazy = ("nodelab.otp", "nodelab.dist.term_format")
        assert not [m for m in sys.modules if m.startswith(lazy)], sorted(sys.modules)
        assert {"Task", "Atom", "Application"} <= set(dir(nodelab))
        from nodelab import Atom, Task
        import nodelab.otp, nodelab.dist.term_format as tf
        assert Task is nodelab.otp.Task is nodelab.Task and Atom is tf.Atom
        assert nodelab.Supervisor is nodelab.otp.Supervisor
        try:
            nodelab.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        else:
            raise AssertionError("nodelab.no_such_name did not raise")
    """)
    run_fresh("""
        import nodelab
        from nodelab import *  # __all__ names the lazy ones too
        assert TaskSupervisor is nodelab.otp.TaskSupervisor and ImproperList.__name__
    """)


def test_a_namespace_nobody_completes_gets_the_whole_prelude_at_once() -> None:
    # A script's __main__ (Node.start without a kernel): its own code may use Task right
    # after Node.start, as before.
    run_fresh("""
        import nodelab
        from nodelab.dist import shipment
        namespace = {}
        shipment.install_prelude(namespace)
        assert set(nodelab.PRELUDE) <= set(namespace), set(nodelab.PRELUDE) - set(namespace)
        assert namespace["Task"] is nodelab.Task and not shipment.lazy_prelude_names()
    """)


def test_a_deferred_namespace_gets_a_lazy_name_when_a_shipped_function_names_it() -> None:
    run_fresh("""
        import sys
        import nodelab
        from nodelab.dist import shipment
        namespace = {}
        shipment.defer_prelude(namespace)
        shipment.install_prelude(namespace)
        assert "Task" not in namespace and "send" in namespace
        assert "nodelab.otp" not in sys.modules
        shipment.set_namespace_provider(lambda: namespace)
        # Named only by a function defined inside the shipped one: found all the same.
        shipped = shipment.loads(shipment.dumps(lambda: (lambda: Atom("ok"))))
        assert "Atom" in namespace and "Task" not in namespace
        assert shipped()() == nodelab.Atom("ok")
        shipment.complete_prelude()
        assert namespace["Task"] is nodelab.Task and not shipment.lazy_prelude_names()
    """)
