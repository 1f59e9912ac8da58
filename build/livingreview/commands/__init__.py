"""The command line: argument parsing, one handler per command, the error boundary; serve."""

import os

# Pydantic looks through every installed distribution's entry points for plugins when the
# first model is built: about 40 ms of a 0.4 s no-op build. livingreview's own models use
# none, so the search is skipped while the command line imports them, and ``cli.main``
# puts the variable back as the user had it before any analysis kernel or tool starts.
PYDANTIC_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"
USER_PYDANTIC_PLUGINS = os.environ.get(PYDANTIC_PLUGINS)
os.environ[PYDANTIC_PLUGINS] = "__all__"
