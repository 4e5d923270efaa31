"""The Beeyard host agent (``beeyard-agent``).

The version is a literal here (and read from here by the build, see
pyproject.toml) rather than looked up with importlib.metadata at run time:
that import alone costs the long-running daemon about 2 MB of memory.
"""

__version__ = "0.1.0"
