"""Shared test set-up."""

# Lightning binds its console log handler to sys.stderr at first import. Import it here, while
# pytest's session-long capture is in place, not inside a test whose capsys stream is closed
# when that test ends (later tests would then print "--- Logging error ---" tracebacks).
import lightning.pytorch  # noqa: F401,E402
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use tiny tensors: one intra-op thread is much faster than two on a shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
