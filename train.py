"""Train an agent (shim for ``maskrl.train``): ``python train.py --help``."""

from maskrl.train import main

if __name__ == "__main__":
    main()
