import sys

from livingreview.commands.entry import main

sys.exit(main())
