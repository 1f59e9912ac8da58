import sys

from livingreview.commands.cli import main

sys.exit(main())
