import os

os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


@pytest.fixture
def compose():
    """Compose the project's Hydra config with overrides, as run.py would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture(autouse=True)
def own_wandb_service():
    """Each test's runs start their own W&B service. An in-process run leaves WANDB_SERVICE in os.environ, and
    W&B then attaches every later child process to the pytest process's service instead of its own (and a test
    that tears that service down leaves them a dead one). Dropped before and after each test, never restored."""
    os.environ.pop("WANDB_SERVICE", None)
    yield
    os.environ.pop("WANDB_SERVICE", None)
