"""`python -m trainer.evaluate`: the entry point of trainer/inference/evaluate.py (its docstring says how)."""

import sys

from trainer.inference.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])  # exits non-zero itself on bad input; returns the means
