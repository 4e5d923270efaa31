"""The Beeyard host agent (``beeyard-agent``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beeyard-agent")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
