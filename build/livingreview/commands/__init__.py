"""The command line: argument parsing, one handler per command, the error boundary; serve."""

import os

# Pydantic looks through every installed distribution's entry points for plugins when the
# first model is built: about 40 ms of a 0.4 s no-op build. livingreview's own models use
# none, so the search is skipped while the command line imports them (cli.py restores the
# variable right after its imports), and analysis kernels and tools see the user's setting.
_PYDANTIC_PLUGINS = "PYDANTIC_DISABLE_PLUGINS"
_USER_PYDANTIC_PLUGINS = os.environ.get(_PYDANTIC_PLUGINS)
os.environ[_PYDANTIC_PLUGINS] = "__all__"


def restore_pydantic_plugins() -> None:
    """``PYDANTIC_DISABLE_PLUGINS`` as the user had it, once the command line's models are built."""
    if _USER_PYDANTIC_PLUGINS is None:
        os.environ.pop(_PYDANTIC_PLUGINS, None)
    else:
        os.environ[_PYDANTIC_PLUGINS] = _USER_PYDANTIC_PLUGINS
