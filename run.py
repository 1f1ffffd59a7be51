"""Entry point: ``python run.py env=movement_bandits algo=mlsh`` (see conf/config.yaml for every option)."""

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

os.environ.setdefault("MUJOCO_GL", "egl")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from pathlib import Path

    from mlsh.config import ConfigError, validate
    from mlsh.runlog import write_provenance
    from mlsh.train import meta_train

    try:
        validate(cfg)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    write_provenance(run_dir)
    group = Path(hc.sweep.dir).name if hc.mode.name == "MULTIRUN" else None
    summary = meta_train(cfg, run_dir, group=group, progress=cfg.progress_bar)
    print(f"run folder: {run_dir}\n" + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                               for k, v in summary.items()))
    return summary["final_return_last10"]


if __name__ == "__main__":
    main()
