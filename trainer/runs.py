"""`python -m trainer.runs`: the entry point of trainer/experiments/cli.py (its docstring says how)."""

import sys

from trainer.experiments.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
