"""`python -m vaeguard` runs the command line."""

from .cli import main

main()
