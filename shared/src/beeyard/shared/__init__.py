"""The Beeyard wire schema shared by server and agent.

``__version__`` is looked up only when asked for: importlib.metadata costs
about 2 MB of memory, which the long-running agent imports this package
without needing.
"""


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("beeyard-shared")
        except PackageNotFoundError:  # running from a source tree without installing
            return "0.0.0+source"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
