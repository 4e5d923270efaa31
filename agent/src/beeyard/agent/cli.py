"""Command line of ``beeyard-agent``.

Only ``--version`` exists until the agent link lands; the entry point is here
now so that packaging and install scripts are exercised from the start.
"""

import argparse
from collections.abc import Sequence

from beeyard.agent import __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="beeyard-agent", description="Beeyard host agent")
    parser.add_argument("--version", action="version", version=f"beeyard-agent {__version__}")
    parser.parse_args(argv)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
