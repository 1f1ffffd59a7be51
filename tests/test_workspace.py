"""The W&B workspace specification (mlsh.workspace), built without network, against what a run logs."""

from __future__ import annotations

import json

from mlsh import workspace
from mlsh.runlog import read_metrics, wandb_local_history


def test_every_panel_key_is_logged_by_a_run_and_is_in_the_specification(tmp_path):
    from tests.test_smoke import run

    run_dir = tmp_path / "fr"
    run("run.py", "env=four_rooms", "schedule=smoke", "logger.mode=offline", "progress_bar=false",
        f"hydra.run.dir={run_dir}")
    logged = {k for row in read_metrics(run_dir) for k in row}
    logged |= {k.removesuffix("/_type") for row in wandb_local_history(run_dir, media=True) for k in row}
    wanted = [key for items in workspace.panels(4).values() for _, keys in items for key in keys]
    assert set(wanted) <= logged, sorted(set(wanted) - logged)
    assert {"master/share_sub3", "sub3/value_loss", "maps/masters", "video/episode"} <= set(wanted)
    spec = json.dumps(workspace.specification(workspace.build("me", "mlsh", k=4)))
    assert all(f'"{key}"' in spec for key in wanted)
    assert '"global_step"' in spec and '"Return"' in spec and '"Maps and video"' in spec


def test_cli_prints_the_specification_and_saving_without_network_is_a_named_error(tmp_path):
    from tests.test_smoke import run

    proc = run("-m", "mlsh.workspace", "--entity", "me", "--project", "p", "--k", "3")
    spec = json.loads(proc.stdout)
    assert spec["entity"] == "me" and spec["project"] == "p" and "sub2/value_loss" in proc.stdout
    import subprocess
    import sys

    from tests.test_smoke import ROOT

    failed = subprocess.run([sys.executable, "-m", "mlsh.workspace", "--entity", "me", "--save"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env={**__import__("os").environ, "WANDB_BASE_URL": "http://127.0.0.1:9"})
    assert failed.returncode != 0 and "no connection to the W&B server" in failed.stderr
