"""A ready W&B workspace for a project of MLSH runs: ``python -m mlsh.workspace --entity E --project P [--save]``.

Sections: the return (``episode_return``, ``task/warmup_return``, ``task/final_return``), the master (each
sub-policy's share of macro steps, its entropy), the losses (the master's and each sub-policy's PPO losses), and
the maps and the video (``mlsh.media``); every chart on the ``global_step`` axis, runs grouped by their W&B group
(a sweep's runs share one). Without ``--save`` the workspace's specification is printed as JSON (no network
needed); with ``--save`` it is saved to W&B (needs the network and an API key) and its URL printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

LOSSES = ("policy_gradient_loss", "value_loss", "entropy_loss", "approx_kl", "clip_fraction")
MEDIA = ("maps/subpolicies", "maps/masters", "video/episode")


def panels(k: int) -> dict[str, list[tuple[str, list[str]]]]:
    """The workspace's sections for K sub-policies, as {section: [(panel title, keys)]}: what is built and saved."""
    return {
        "Return": [("episode return", ["episode_return"]),
                   ("a fresh master at the end of warmup", ["task/warmup_return"]),
                   ("after the joint phase", ["task/final_return"])],
        "Master": [("sub-policy share of macro steps", [f"master/share_sub{i}" for i in range(k)]),
                   ("master entropy", ["master/entropy"])],
        "Losses": [(f"master {loss}", [f"master/{loss}"]) for loss in LOSSES[:2]]
        + [(f"sub-policy {loss}", [f"sub{i}/{loss}" for i in range(k)]) for loss in LOSSES],
        "Maps and video": [("sub-policy maps", [MEDIA[0]]), ("master maps", [MEDIA[1]]),
                           ("episode video", [MEDIA[2]])],
    }


def build(entity: str, project: str, k: int = 2, name: str = "MLSH"):
    """The ``wandb_workspaces`` Workspace of ``panels(k)``."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    sections = []
    for title, items in panels(k).items():
        built = [wr.MediaBrowser(title=t, media_keys=keys, gallery_axis="step") if keys[0] in MEDIA
                 else wr.LinePlot(title=t, x="global_step", y=keys) for t, keys in items]
        sections.append(ws.Section(name=title, panels=built, is_open=True))
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        settings=ws.WorkspaceSettings(x_axis="global_step"),
                        runset_settings=ws.RunsetSettings(groupby=[expr.Metric("Group")]))


def specification(workspace) -> dict[str, Any]:
    """The workspace as W&B stores it (a view), built without network."""
    return json.loads(workspace._to_model().model_dump_json(by_alias=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.workspace", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="mlsh", help="W&B project (logger.project; default mlsh)")
    parser.add_argument("--k", type=int, default=2, help="sub-policies whose shares and losses get a line")
    parser.add_argument("--name", default="MLSH", help="the workspace's name")
    parser.add_argument("--save", action="store_true", help="save it to W&B (network and API key)")
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error("--k must be >= 1")
    workspace = build(args.entity, args.project, args.k, args.name)
    if not args.save:
        json.dump(specification(workspace), sys.stdout, indent=1)
        print()
        return
    from mlsh.runlog import wandb_reachable

    if not wandb_reachable():
        raise SystemExit("error: no connection to the W&B server (WANDB_BASE_URL, default api.wandb.ai): the "
                         "workspace was not saved; without --save its specification is printed")
    try:
        workspace.save()
    except Exception as err:  # noqa: BLE001 - W&B's errors (no key, no such entity) as one line
        raise SystemExit(f"error: W&B refused the workspace ({type(err).__name__}: {err})") from None
    print(f"saved {workspace.url}")


if __name__ == "__main__":
    main()
