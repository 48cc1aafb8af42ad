import sys

from hqcbench.cli import main

sys.exit(main())
