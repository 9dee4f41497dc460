"""Settings and fixtures shared by the whole test-suite."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from maskrl.train import main as train_main

#: The one CLI run the tests of train.py, evaluate.py and safe loading read: small but complete (two PPO iterations
#: over two envs, finished episodes, evaluations of two episodes, a best and a final model, one kept checkpoint).
KART_RUN_ARGS = [
    "--seed",
    "3",
    "--env-kwargs",
    "n_laps=1",
    "max_steps=60",
    "-n",
    "512",
    "--n-envs",
    "2",
    "--hyperparams",
    "behaviour_cloning=null",  # the default agent's clone of the scripted driver takes a minute
    "n_steps=128",
    "batch_size=64",
    "n_epochs=1",
    "policy_kwargs={net_arch: [16], activation_fn: relu}",
    "--eval-freq",
    "256",
    "--eval-episodes",
    "2",
    "--save-freq",
    "256",
    "--keep-checkpoints",
    "1",
    "-v",
    "0",
]


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # The networks and tensors in the tests are tiny: torch's intra-op thread pool only adds overhead, and a lot
    # of it on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def kart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of ``train.py --log-folder <tmp> KART_RUN_ARGS`` (``ppo/Kart-v1_1``).

    Shared by every test that reads it, so no test may change it: tests that doctor a run folder copy it first.
    """
    log_folder = tmp_path_factory.mktemp("runs")
    train_main(["--log-folder", str(log_folder), *KART_RUN_ARGS])
    (run_dir,) = (log_folder / "ppo").iterdir()
    return run_dir


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server of the tests' own (Debian's server programs; ``.ci/run`` installs them), skipped without."""
    from postgres_server import PostgresServer, find_bindir  # tests/ is on the path of its tests

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl): apt-get install postgresql (.ci/run does)")
    server = PostgresServer(bindir).start()
    try:
        yield server.url
    finally:
        server.stop()
