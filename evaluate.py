"""Evaluate a trained agent (shim for ``maskrl.evaluate``): ``python evaluate.py --help``."""

from maskrl.evaluate import main

if __name__ == "__main__":
    main()
