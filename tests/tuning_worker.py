"""A tuning worker: ``train.py -optimize ...`` with one torch thread (several workers share the test machine's cores).

The PostgreSQL tests start it as a process (``python tests/tuning_worker.py --algo ppo ... -optimize --storage URL``)
to have several workers share one study; :func:`parse` is ``train.py``'s own argument parsing.
"""

from __future__ import annotations

import argparse
import sys

from maskrl.train import build_parser
from maskrl.train import main as train_main


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    train_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
