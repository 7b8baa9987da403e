"""Fit the real world's simulator to tracked centroid tracks (free initial position and velocity,
known constants) with a batched Levenberg-Marquardt; report the residual RMSE.

All clips, all starting guesses and all finite-difference probes go through one vectorised
simulator call per iteration, so scoring hundreds of clips takes about a second.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from afd.world.physics import LOOSE, REAL, Constants, InitialState, simulate

MISS_PENALTY_PX = 4.0  # residual charged for a frame where no object was found
_FD_STEP = 1e-5  # finite-difference step, frame heights (or heights/s)
_ITERS = 30


def _sim(params: np.ndarray, radius: np.ndarray, n_frames: int, fps: float, consts: np.ndarray):
    """consts: (n, 3) per-row g, restitution, friction."""
    n = params.shape[0]
    tr = simulate(
        InitialState(params[:, 0], params[:, 1], params[:, 2], params[:, 3]),
        radius=radius, g=consts[:, 0], restitution=consts[:, 1],
        friction=consts[:, 2], ballistic=np.ones(n, bool),
        n_frames=n_frames, fps=fps, record_events=False,
    )
    return np.stack([tr.x, tr.y], -1)  # (n, T, 2)


def _initial_guesses(obs: np.ndarray, valid: np.ndarray, radius: np.ndarray, fps: float, g: np.ndarray) -> np.ndarray:
    """(B, S, 4) starting points: finite differences of the first visible frames (with and
    without the gravity correction), a ball rolling on the floor, and a ball at rest."""
    B, T, _ = obs.shape
    guesses = np.zeros((B, 4, 4))
    for b in range(B):
        idx = np.nonzero(valid[b])[0]
        if len(idx) == 0:
            guesses[b] = [0.5, 0.5, 0.0, 0.0]
            continue
        i0 = idx[0]
        p0 = obs[b, i0]
        t0 = i0 / fps
        if len(idx) >= 2:
            i1 = idx[1]
            dt = (i1 - i0) / fps
            v = (obs[b, i1] - p0) / dt
        else:
            v = np.zeros(2)
        # Back-propagate the first visible position to t = 0 where frames were missed.
        vy_grav = v[1] - 0.5 * g[b] * (idx[1] - i0) / fps if len(idx) >= 2 else 0.0
        guesses[b, 0] = [p0[0] - v[0] * t0, p0[1] - v[1] * t0, v[0], v[1]]
        guesses[b, 1] = [p0[0] - v[0] * t0, p0[1] - vy_grav * t0, v[0], vy_grav]
        guesses[b, 2] = [p0[0] - v[0] * t0, 1.0 - radius[b], v[0], 0.0]
        guesses[b, 3] = [p0[0], p0[1], 0.0, 0.0]
    return guesses


def fit_rmse(
    obs: np.ndarray,
    valid: np.ndarray,
    radius: np.ndarray,
    fps: float,
    size: int,
    constants: Constants | Sequence[Constants] = REAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit the simulator to B tracks.

    obs: (B, T, 2) centres in frame heights (NaN allowed where not valid); valid: (B, T) bool;
    radius: (B,) expected radii (frame heights); size: the frame size in pixels for reporting;
    constants: the world's constants for every track, or one ``Constants`` per track.
    Returns (rmse_px (B,), fitted (B, T, 2) trajectory in frame heights). Missing frames count
    ``MISS_PENALTY_PX`` each in the RMSE; a clip with no valid frame gets exactly that.
    """
    B, T, _ = obs.shape
    per_track = [constants] * B if isinstance(constants, Constants) else list(constants)
    if len(per_track) != B:
        raise ValueError(f"got {len(per_track)} sets of constants for {B} tracks")
    consts = np.array([[c.g, c.restitution, c.friction] for c in per_track], float).reshape(B, 3)
    guesses = _initial_guesses(obs, valid, radius, fps, consts[:, 0])
    S = guesses.shape[1]
    p = guesses.reshape(B * S, 4)
    rad = np.repeat(radius, S)
    row_consts = np.tile(np.repeat(consts, S, axis=0), (5, 1))
    o = np.repeat(np.nan_to_num(obs), S, axis=0)
    m = np.repeat(valid, S, axis=0).astype(float)[..., None]  # (N, T, 1)
    N = B * S

    def residuals_and_jac(params):
        probes = np.concatenate([params] + [params + _FD_STEP * np.eye(4)[k] for k in range(4)])
        traj = _sim(probes, np.tile(rad, 5), T, fps, row_consts).reshape(5, N, T, 2)
        res = ((traj[0] - o) * m).reshape(N, -1)
        jac = np.stack([((traj[k + 1] - traj[0]) * m).reshape(N, -1) / _FD_STEP for k in range(4)], -1)
        return res, jac, traj[0]

    res, jac, traj = residuals_and_jac(p)
    cost = (res ** 2).sum(1)
    lam = np.full(N, 1e-3)
    for _ in range(_ITERS):
        JtJ = np.einsum("nmi,nmj->nij", jac, jac)
        Jtr = np.einsum("nmi,nm->ni", jac, res)
        A = JtJ + lam[:, None, None] * (np.eye(4) * np.maximum(np.diagonal(JtJ, axis1=1, axis2=2), 1e-9)[:, None, :])
        A += 1e-12 * np.eye(4)
        step = -np.linalg.solve(A, Jtr[..., None])[..., 0]
        cand = p + step
        r2, j2, t2 = residuals_and_jac(cand)
        c2 = (r2 ** 2).sum(1)
        better = c2 < cost
        p = np.where(better[:, None], cand, p)
        res = np.where(better[:, None], r2, res)
        jac = np.where(better[:, None, None], j2, jac)
        traj = np.where(better[:, None, None], t2, traj)
        cost = np.where(better, c2, cost)
        lam = np.where(better, lam / 3, lam * 4).clip(1e-9, 1e9)
        if np.all(np.abs(step).max(1) < 1e-9):
            break
    cost = cost.reshape(B, S)
    best = cost.argmin(1)
    sq = cost[np.arange(B), best] * size * size
    n_valid = valid.sum(1)
    n_miss = T - n_valid
    rmse = np.sqrt((sq + n_miss * MISS_PENALTY_PX ** 2) / T)
    fitted = traj.reshape(B, S, T, 2)[np.arange(B), best]
    return rmse, fitted


def _loose_grid() -> tuple[Constants, ...]:
    """Constant sets spanning the loose world's ranges (``LOOSE``: g and friction from 0 to 2x
    and 3x real, restitution from 0 to 1), 9 x 5 x 3 = 135 sets, the real ones included."""
    gs = np.linspace(LOOSE.g_range[0], LOOSE.g_range[1], 9) * REAL.g
    es = np.minimum(np.linspace(LOOSE.restitution_range[0], LOOSE.restitution_range[1], 5) * REAL.restitution, 1.0)
    fs = np.array([LOOSE.friction_range[0], 1.0, LOOSE.friction_range[1]]) * REAL.friction
    return tuple(Constants(float(g), float(e), float(f)) for g in gs for e in es for f in fs)


LOOSE_GRID = _loose_grid()
_MAX_ROWS = 4096  # tracks per fit call in best_constants_rmse: bounds memory (~100 MB)


def best_constants_rmse(
    obs: np.ndarray,
    valid: np.ndarray,
    radius: np.ndarray,
    fps: float,
    size: int,
    grid: Sequence[Constants] = LOOSE_GRID,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit every track under every constant set of ``grid`` and keep the best: how well *some*
    physics of the world's family explains the track, whichever constants. A clip of the loose
    world scores near zero RMSE here (its own constants are close to a grid point) even where the
    real-constants fit of :func:`fit_rmse` is poor; a track that jumps and stalls scores poorly
    under every set.

    Same arguments as :func:`fit_rmse`. Returns (rmse_px (B,), index into ``grid`` of the best
    set (B,))."""
    B, G = obs.shape[0], len(grid)
    rows = [(b, k) for b in range(B) for k in range(G)]
    rmse = np.empty(len(rows))
    for i in range(0, len(rows), _MAX_ROWS):
        chunk = rows[i:i + _MAX_ROWS]
        b = np.array([r[0] for r in chunk])
        rmse[i:i + len(chunk)], _ = fit_rmse(obs[b], valid[b], radius[b], fps, size, [grid[r[1]] for r in chunk])
    rmse = rmse.reshape(B, G)
    best = rmse.argmin(1)
    return rmse[np.arange(B), best], best
