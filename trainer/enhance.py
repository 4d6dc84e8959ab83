"""`python -m trainer.enhance`: the entry point of trainer/inference/enhance.py (its docstring says how)."""

import sys

from trainer.inference.enhance import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
