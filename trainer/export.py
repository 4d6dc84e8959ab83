"""`python -m trainer.export`: the entry point of trainer/inference/export.py (its docstring says how)."""

import sys

from trainer.inference.export import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
