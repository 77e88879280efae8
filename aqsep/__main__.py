import sys

from aqsep.cli import main

sys.exit(main())
