"""What `make` and `python -m mtl <command>` run: each module reads its command's arguments, calls the
library below and prints the command's own report. Nothing outside this package imports it."""
