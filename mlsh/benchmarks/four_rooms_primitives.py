"""How well can goal-blind sub-policies serve FourRooms goals? Exact answers from the env's transition model:

    python -m mlsh.benchmarks.four_rooms_primitives
    python -m mlsh.benchmarks.four_rooms_primitives --run <run dir>   # what a run's sub-policies serve

Sub-policies do not see the goal: each is a fixed policy over cells. A master that knows the goal (it is trained
per task) picks one of K of them every N steps. For a set of K primitives, the best such master's expected
episode return is computed exactly by dynamic programming over the macro steps (``episode_steps / N`` decisions,
each primitive run for N steps through the env's own transition probabilities, reward 1 per step on the goal).
The oracle is the optimal goal-aware policy over single steps, from the same start cell. Printed per goal
distribution: the oracle, and the best master over (a) go-to-cell primitives for the distribution's goals,
(b) K go-to-cell primitives chosen greedily to serve the distribution best, (c) K "always move one way"
primitives (the four directions).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # small matrices: threads only contend (before numpy loads)

import numpy as np  # noqa: E402

from envs.four_rooms import N_CELLS, NEXT_CELL, ORIGINAL_GOALS, FourRoomsEnv  # noqa: E402
from mlsh.benchmarks import cli_description


def transition_matrices(slip_prob: float = 1.0 / 3.0) -> np.ndarray:
    """``P[a, s, s']`` of the default ("standard") transition rule: the intended move w.p. 1 - ``slip_prob``,
    each other direction w.p. ``slip_prob`` / 3; a move into a wall stays."""
    n_actions = NEXT_CELL.shape[1]
    P = np.zeros((n_actions, N_CELLS, N_CELLS))
    for a in range(n_actions):
        for d in range(n_actions):
            p = 1 - slip_prob if d == a else slip_prob / (n_actions - 1)
            P[a, np.arange(N_CELLS), NEXT_CELL[:, d]] += p
    return P


def oracle_returns(P: np.ndarray, horizon: int) -> np.ndarray:
    """``V[s, g]``: the optimal expected return over ``horizon`` steps from cell s with goal g."""
    V = np.zeros((N_CELLS, N_CELLS))
    reward = np.eye(N_CELLS)  # reward[s', g] = 1 on the goal
    for _ in range(horizon):
        V = np.max(P @ (reward + V), axis=0)
    return V


def go_to_policies(P: np.ndarray, gamma: float = 0.95, iterations: int = 300) -> np.ndarray:
    """``pi[s, c]``: for every target cell c, the greedy policy of the discounted problem "reward 1 on c" (walk
    there, stay there)."""
    r = np.eye(N_CELLS)
    V = np.zeros((N_CELLS, N_CELLS))
    for _ in range(iterations):
        V = np.max(P @ (r + gamma * V), axis=0)
    return np.argmax(P @ (r + gamma * V), axis=0)


def macro_model(P: np.ndarray, policy: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, R): the n-step transition matrix of a primitive and ``R[s, g]``, its expected steps on goal g."""
    return n_steps(P[policy, np.arange(N_CELLS)], n)


def macro_model_stochastic(P: np.ndarray, probs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``macro_model`` for a stochastic primitive, ``probs[s, a]`` its action probabilities in each cell."""
    return n_steps(np.einsum("sa,ast->st", probs, P), n)


def n_steps(step: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(M, R) of n steps of the one-step transition matrix ``step[s, s']``."""
    M, R = np.eye(N_CELLS), np.zeros((N_CELLS, N_CELLS))
    for _ in range(n):
        M = M @ step
        R += M
    return M, R


def master_returns(models: list[tuple[np.ndarray, np.ndarray]], decisions: int) -> np.ndarray:
    """``U[s, g]``: the best goal-aware master's expected return over ``decisions`` macro steps."""
    U = np.zeros((N_CELLS, N_CELLS))
    for _ in range(decisions):
        U = np.max(np.stack([R + M @ U for M, R in models]), axis=0)
    return U


def greedy_cells(candidates: dict[int, tuple], k: int, goals: list[int], start: int, decisions: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(k):
        best = max((c for c in candidates if c not in chosen), key=lambda c: master_returns(
            [candidates[x] for x in [*chosen, c]], decisions)[start, goals].mean())
        chosen.append(best)
    return chosen


def run_subpolicies(run: str, P: np.ndarray, start: int, goals: list[int], episode: int, n: int) -> None:
    """Each sub-policy of a run's latest good checkpoint, as it acts (its action probabilities in every cell), run
    alone for a whole episode, and the best goal-aware master over all of them: exact expected returns per goal."""
    from mlsh.media import action_probs, load_hierarchy

    h, _ = load_hierarchy(run)
    env = h.make_env().unwrapped
    if not isinstance(env, FourRoomsEnv):
        raise ValueError(f"{run} is a run of env={h.cfg.env.name}: --run scores the sub-policies of a FourRooms run")
    obs = np.stack([env.obs_at(c) for c in range(N_CELLS)])
    subs = [action_probs(model, obs, h.normalize) for model in h.subs]
    models = [macro_model_stochastic(P, probs, n) for probs in subs]
    oracle = oracle_returns(P, episode)[start, goals]
    print(f"{run}: each sub-policy alone for a {episode}-step episode from cell {start}, and the best master over "
          f"them (N={n}), expected return per goal")
    print(f"{'':<16}" + "".join(f"{'goal ' + str(g):>10}" for g in goals))
    for k, probs in enumerate(subs):
        alone = macro_model_stochastic(P, probs, episode)[1][start, goals]
        print(f"{'sub-policy ' + str(k):<16}" + "".join(f"{v:>10.1f}" for v in alone))
    best = master_returns(models, episode // n)[start, goals]
    print(f"{'best master':<16}" + "".join(f"{v:>10.1f}" for v in best) + f"   mean {best.mean():.1f}")
    print(f"{'oracle':<16}" + "".join(f"{v:>10.1f}" for v in oracle) + f"   mean {oracle.mean():.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m mlsh.benchmarks.four_rooms_primitives",
                                     description=cli_description(__doc__))
    parser.add_argument("--k", type=int, default=4, help="number of sub-policies (default 4, the paper's)")
    parser.add_argument("--n", type=int, default=25, help="macro duration N (default 25)")
    parser.add_argument("--episode", type=int, default=100, help="episode length (default 100)")
    parser.add_argument("--start", type=int, default=62, help="start cell (default 62, the env's)")
    parser.add_argument("--run", help="an MLSH FourRooms run folder: score its sub-policies per goal instead")
    args = parser.parse_args()
    P = transition_matrices()
    if args.run:
        try:
            return run_subpolicies(args.run, P, args.start, list(ORIGINAL_GOALS), args.episode, args.n)
        except (FileNotFoundError, ValueError) as err:  # CheckpointError is a ValueError
            raise SystemExit(f"error: {err}") from None
    decisions = args.episode // args.n
    oracle = oracle_returns(P, args.episode)
    go_to = go_to_policies(P)
    models = {c: macro_model(P, go_to[:, c], args.n) for c in range(N_CELLS)}
    always = [macro_model(P, np.full(N_CELLS, a), args.n) for a in range(P.shape[0])]
    print(f"FourRooms, start cell {args.start}, K={args.k}, N={args.n}, {args.episode}-step episodes: "
          "expected episode return, mean over the goals")
    print(f"{'goal distribution':<28} {'oracle':>7} {'goal cells':>11} {'greedy cells':>13} {'directions':>11}")
    for name, goals in (("original four {68,80,90,103}", list(ORIGINAL_GOALS)), ("every free cell (104)",
                                                                                    list(range(N_CELLS)))):
        own = master_returns([models[g] for g in goals], decisions)[args.start, goals].mean() \
            if len(goals) <= args.k else float("nan")
        cells = greedy_cells(models, args.k, goals, args.start, decisions)
        greedy = master_returns([models[c] for c in cells], decisions)[args.start, goals].mean()
        dirs = master_returns(always, decisions)[args.start, goals].mean()
        print(f"{name:<28} {oracle[args.start, goals].mean():>7.1f} {own:>11.1f} {greedy:>13.1f} {dirs:>11.1f}"
              f"   greedy cells {cells}")


if __name__ == "__main__":
    main()
