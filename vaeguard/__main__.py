"""`python -m vaeguard` runs the command line; also the `vaeguard` console script."""

import sys


def run() -> None:
    """Import the CLI and run it; Ctrl-C while it is still loading is one line, exit 130."""
    try:
        from .cli import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
