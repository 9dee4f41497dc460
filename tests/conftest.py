"""Settings shared by the whole test-suite."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    # The networks and tensors in the tests are tiny: torch's intra-op thread pool only adds overhead, and a lot
    # of it on a busy machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
