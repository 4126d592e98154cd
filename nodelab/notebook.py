"""``import nodelab.notebook``: nodelab's magics in this notebook, whatever its kernel.

The lessons start with this line. In the "Python 3 (nodelab)" kernel the magics are
already there and the import changes nothing; in a plain ``python3`` kernel (nbval's
``--nbval-current-env``, a stock Jupyter) it loads them, like ``%load_ext nodelab`` would,
but without printing "already loaded" — so a notebook's outputs are the same under both.
"""

from IPython import get_ipython

_shell = get_ipython()
if _shell is not None:
    _shell.extension_manager.load_extension("nodelab")
