import sys

from nodelab.tools.cli import main

sys.exit(main())
