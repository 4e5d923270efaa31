"""The Beeyard wire schema shared by server and agent."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beeyard-shared")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
