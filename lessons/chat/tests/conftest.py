"""What ``mix test`` does before the tests run: make ``chat`` importable, start it.

pytest (with the nodelab plugin) runs in the ``test`` environment, so ``config/test.py``
applies. Peer nodes started by the ``peers`` fixture inherit ``NODELAB_APP_PATH`` and find
the application too.
"""

import os
import sys
from pathlib import Path

import pytest

from nodelab.otp import Application

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))
# Peer nodes started by the tests find the application through this.
APP_PATH = [str(PROJECT)] + os.environ.get("NODELAB_APP_PATH", "").split(os.pathsep)
os.environ["NODELAB_APP_PATH"] = os.pathsep.join(p for p in APP_PATH if p)


@pytest.fixture(scope="session", autouse=True)
def chat_application():
    """The chat application, started once for the whole test run."""
    _, started = Application.ensure_all_started("chat")
    yield
    if started:
        Application.stop("chat")
