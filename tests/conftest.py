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


def _write_captions(root, rows, style):
    """Captions of files already in ``root``: ``rows`` of (file name, caption) as one
    ``metadata.jsonl`` (style "jsonl") or a ``.txt`` beside each file (style "txt")."""
    import json
    from pathlib import Path

    root = Path(root)
    if style == "jsonl":
        (root / "metadata.jsonl").write_text(
            "\n".join(json.dumps({"file_name": f, "text": t}) for f, t in rows))
    else:
        for f, t in rows:
            (root / f).with_suffix(".txt").write_text(t + "\n")
    return root


@pytest.fixture(scope="session")
def write_captions():
    """``write_captions(root, [(file name, caption), ...], "jsonl" | "txt")``."""
    return _write_captions
