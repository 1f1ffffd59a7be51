import subprocess
import sys
import warnings

import pytest

from mlsh.config import ConfigError, validate
from tests.conftest import ROOT


def test_default_config_is_valid_and_has_the_paper_bandits_schedule(compose):
    cfg = compose()
    validate(cfg)
    assert (cfg.env.id, cfg.algo.name) == ("mlsh/MovementBandits-v0", "mlsh")
    assert (cfg.n_subpolicies, cfg.macro_duration) == (2, 10)
    assert (cfg.schedule.warmup_iters, cfg.schedule.joint_iters) == (9, 1)
    assert cfg.logger.mode == "offline"


def test_paper_experiment_composes(compose):
    cfg = compose("experiment=bandits_paper")
    validate(cfg)
    assert cfg.schedule.rollout_steps == 24000 and cfg.schedule.n_envs == 12
    assert cfg.algo.subpolicy.ppo.learning_rate == pytest.approx(3e-4)
    assert (cfg.schedule.n_groups, cfg.schedule.stagger, cfg.algo.subpolicy.minibatches) == (10, "original", 15)


def test_env_files_set_their_task_groups_and_mlsh_settings(compose):
    fr = compose("env=four_rooms")
    assert (fr.schedule.n_groups, fr.schedule.joint_iters, fr.algo.master.random_pick_prob) == (1, 5, 0.05)
    paper = compose("experiment=four_rooms_paper")
    assert (paper.schedule.n_groups, paper.schedule.joint_iters, paper.algo.master.random_pick_prob) == (10, 30, 0.1)
    assert (fr.algo.subpolicy.minibatches, paper.algo.subpolicy.minibatches) == (None, 15)
    assert compose("env=ant_two_walk").algo.subpolicy.minibatches == 15  # env files come after algo
    assert compose("env=ant_two_walk", "algo.subpolicy.minibatches=null").algo.subpolicy.minibatches is None
    assert compose("env=movement_bandits").schedule.n_groups == 1


def test_ant_learning_experiment_reaches_the_env_and_the_update(compose):
    from mlsh.learners import make_task_env

    cfg = compose("experiment=ant_two_walk_learn")
    validate(cfg)
    assert cfg.algo.subpolicy.ppo.target_kl == pytest.approx(0.03)
    assert (cfg.schedule.n_groups, cfg.macro_duration, cfg.schedule.joint_iters) == (4, 200, 40)  # the env file's
    venv = make_task_env(cfg, seed=0, n_groups=1)
    try:
        assert venv.get_attr("reward_type", [0]) == ["progress"]
        assert venv.get_attr("ctrl_cost_weight", [0]) == [pytest.approx(0.1)]
    finally:
        venv.close()
    default = make_task_env(compose("env=ant_two_walk"), seed=0, n_groups=1)
    try:  # the env file keeps the paper's reward
        assert default.get_attr("reward_type", [0]) == ["reference"]
        assert default.get_attr("ctrl_cost_weight", [0]) == [pytest.approx(0.5)]
    finally:
        default.close()


@pytest.mark.parametrize("algo", ["shared", "scratch"])
def test_baseline_configs_compose(compose, algo):
    cfg = compose(f"algo={algo}")
    validate(cfg)
    assert cfg.algo.name == algo


def test_option_critic_warns_when_its_linear_nets_meet_observations_that_are_not_one_hot(compose):
    with pytest.warns(UserWarning, match=r"algo=option_critic on env=key_door: algo.policy_net_arch, "
                      r"algo.termination_net_arch, algo.critic_net_arch = \[\] .* not one-hot"):
        validate(compose("env=key_door", "algo=option_critic"))
    with pytest.warns(UserWarning, match=r"env=key_door: algo.critic_net_arch = \[\]"):
        validate(compose("env=key_door", "algo=option_critic", "algo.policy_net_arch=[64]",
                         "algo.termination_net_arch=[64]"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # FourRooms' one-hot cells: the tables the defaults are for
        validate(compose("env=four_rooms", "algo=option_critic"))
        validate(compose("env=key_door", "algo=option_critic", "algo.policy_net_arch=[64]",
                         "algo.termination_net_arch=[64]", "algo.critic_net_arch=[64]"))


@pytest.mark.parametrize(
    "override,message",
    [
        ("n_subpolicies=0", "n_subpolicies must be an integer >= 1, got 0"),
        ("macro_duration=-1", "macro_duration must be an integer >= 1, got -1"),
        ("env.id=mlsh/Nope-v0", "env.id: unknown env 'mlsh/Nope-v0'; registered MLSH envs: ['mlsh/"),
        ("schedule.rollout_steps=4020", "rollout_steps per env (4020 / 20 = 201) must be a multiple of macro_duration"),
        ("schedule.rollout_steps=4001", "schedule.rollout_steps (4001) must be a multiple of schedule.n_envs (20)"),
        ("macro_duration=20", "env.episode_steps (50) must be a multiple of macro_duration (20)"),
        ("schedule.warmup_iters=-2", "schedule.warmup_iters must be an integer >= 0"),
        ("algo.master.random_pick_prob=2", "algo.master.random_pick_prob must be a number in [0.0, 1.0], got 2"),
        ("algo.master.random_pick_prob=abc", "algo.master.random_pick_prob must be a number in [0.0, 1.0], got 'abc'"),
        ("schedule.max_minutes=abc", "schedule.max_minutes must be a number > 0 or null, got 'abc'"),
        ("schedule.max_minutes=0", "schedule.max_minutes must be a number > 0 or null, got 0"),
        ("schedule.target_return=abc", "schedule.target_return must be a number or null, got 'abc'"),
        ("algo.subpolicy.ppo.target_kl=abc", "algo.subpolicy.ppo.target_kl must be a number > 0 or null, got 'abc'"),
        ("algo.subpolicy.ppo.target_kl=-1", "algo.subpolicy.ppo.target_kl must be a number > 0 or null, got -1"),
        ("torch_threads=0", "torch_threads must be an integer >= 1, got 0"),
        ("progress_bar=abc", "progress_bar must be true or false, got 'abc'"),
        ("env.normalize_obs=abc", "env.normalize_obs must be true or false, got 'abc'"),
        ("env.episode_steps=abc", "env.episode_steps must be an integer >= 1, got 'abc'"),
        ("algo.subpolicy.net_arch=abc", "algo.subpolicy.net_arch must be a list of layer widths >= 1 (e.g. [64, 64]; "
                                        "[] for none), got 'abc'"),
        ("algo.master.net_arch=[0]", "algo.master.net_arch must be a list of layer widths >= 1"),
        ("algo.master.net_arch=null", "algo.master.net_arch must be a list of layer widths >= 1"),
        ("torch_threads=null", "torch_threads must be an integer >= 1, got None"),
        ("logger.mode=live", "logger.mode must be one of ['online', 'offline', 'disabled']"),
        ("n_subpolicies=two", "n_subpolicies must be an integer >= 1, got 'two'"),
        ("schedule.n_groups=0", "schedule.n_groups must be an integer >= 1, got 0"),
        ("schedule.stagger=random", "schedule.stagger must be one of ['original', 'wrapped'], got 'random'"),
        ("schedule.task_order=sorted", "schedule.task_order must be 'iid' or 'shuffled', got 'sorted'"),
        ("algo.subpolicy.group_weighting=mean", "algo.subpolicy.group_weighting must be one of ['groups', 'samples']"),
        ("algo.subpolicy.switch_bootstrap=last", "algo.subpolicy.switch_bootstrap must be one of ['next', 'own']"),
        ("algo.subpolicy.min_share=1.5", "algo.subpolicy.min_share must be a number in [0, 1], got 1.5"),
        ("algo.subpolicy.minibatches=0", "algo.subpolicy.minibatches must be an integer >= 1, got 0"),
        ("distributed.subpolicy_update=ring", "distributed.subpolicy_update must be 'auto', 'gather' or "
                                              "'allreduce', got 'ring'"),
        ("distributed.balance_masters=sometimes", "distributed.balance_masters must be true or false, got "
                                                  "'sometimes'"),
    ],
)
def test_bad_values_are_named(compose, override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose(override))
    assert message in str(err.value)


def test_run_py_stops_before_any_work_on_a_bad_value(tmp_path):
    proc = subprocess.run(
        [sys.executable, "run.py", "n_subpolicies=0", "logger.mode=disabled", f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "config error: n_subpolicies must be an integer >= 1, got 0" in proc.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_paper_experiment_composes_and_validates(compose, experiment, tmp_path):
    cfg = compose(f"experiment={experiment}")
    if cfg.schedule.joint_iters == 0:  # a transfer experiment: it needs the sub-policies of another run
        with pytest.raises(ConfigError, match="init_from="):
            validate(cfg)
        (tmp_path / "state.json").write_text("{}")
        cfg = compose(f"experiment={experiment}", f"init_from={tmp_path}")
    validate(cfg)
    assert cfg.n_subpolicies >= 2 and cfg.macro_duration >= 10
