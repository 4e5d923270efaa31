"""The Beeyard control plane (``beeyard-server``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("beeyard-server")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+source"
