"""The world's physics: constants, initial conditions per motion, and one vectorised simulator.

Coordinates: x to the right, y downward (image convention), both in units of the frame height
(the frame is square, so [0, 1] x [0, 1]); time in seconds. The floor is the bottom edge, the
walls are the left and right edges; there is no ceiling.

The simulator integrates in fixed sub-steps but solves every sub-step analytically (ballistic
flight, exact floor and wall contact times, rolling with Coulomb friction), so its trajectories
are exact up to the rest threshold. The evaluator fits this same simulator to tracked clips,
which is why real-world clips fit to a fraction of a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from afd.world.grammar import PromptAttrs, grammar

SUBSTEP_HZ = 128.0  # simulator sub-steps per second (part of the world's definition)
REST_SPEED = 0.05  # a floor rebound slower than this (heights/s) leaves the ball resting


@dataclass(frozen=True)
class Constants:
    """Physical constants. ``friction`` is the rolling-friction coefficient (decel = mu * g)."""

    g: float = 3.0  # frame heights / s^2: a dropped ball bounces 2-3 times in a 2 s clip
    restitution: float = 0.75  # floor and walls
    friction: float = 0.1


REAL = Constants()


@dataclass(frozen=True)
class LooseSpec:
    """How the ``loose`` world draws constants per clip.

    A real pretrained video model produces plausible physics some of the time, and an on-policy
    method can only re-weight what the student already produces. So each clip is, with
    probability ``p_near_real``, close to real physics (each constant within
    ``near_real_tol`` relative of its real value), and otherwise each constant is uniform in a
    broad range that contains both zero and the real value (``ranges`` are multiples of the
    real values; restitution is capped at 1).
    """

    p_near_real: float = 0.25
    near_real_tol: float = 0.02
    g_range: tuple[float, float] = (0.0, 2.0)
    restitution_range: tuple[float, float] = (0.0, 1.0 / 0.75)
    friction_range: tuple[float, float] = (0.0, 3.0)


LOOSE = LooseSpec()
MODES = ("real", "loose")


@dataclass
class InitialState:
    """Arrays of shape (B,) in frame heights and heights/s."""

    x: np.ndarray
    y: np.ndarray
    vx: np.ndarray
    vy: np.ndarray


def object_radius(attrs: PromptAttrs) -> float:
    """Radius of a ball, half the side of a square, as a fraction of the frame height."""
    return grammar().sizes[attrs.size]


def draw_initial(attrs: PromptAttrs, rng: np.random.Generator) -> tuple[float, float, float, float]:
    """Initial (x, y, vx, vy) for one clip, random within the motion's semantics.

    Ranges are chosen so that in the real world every falling/thrown/tossed ball bounces on
    the floor at least once, no ball leaves the frame, rolling balls start on the floor, and
    general-domain objects stay inside the frame for the whole clip.
    """
    r = object_radius(attrs)
    floor = 1.0 - r
    u = rng.uniform
    m = attrs.motion
    if m == "falls":
        return u(0.25, 0.75), u(0.15, 0.35), 0.0, 0.0
    if m in ("is thrown to the left", "is thrown to the right"):
        side = -1.0 if m.endswith("left") else 1.0
        x = 0.5 - side * u(0.15, 0.35)
        return x, u(0.25, 0.45), side * u(0.25, 0.5), -u(0.3, 0.8)
    if m == "is tossed upward":
        return u(0.3, 0.7), floor, u(-0.05, 0.05), -u(1.5, 1.95)
    if m in ("rolls to the left", "rolls to the right"):
        side = -1.0 if m.endswith("left") else 1.0
        return 0.5 - side * u(0.15, 0.35), floor, side * u(0.3, 0.6), 0.0
    if m in ("slides to the left", "slides to the right"):
        side = -1.0 if m.endswith("left") else 1.0
        return 0.5 - side * u(0.15, 0.3), u(0.3, 0.7), side * u(0.15, 0.2), 0.0
    if m in ("drifts upward", "drifts downward"):
        side = -1.0 if m.endswith("upward") else 1.0
        return u(0.3, 0.7), 0.5 - side * u(0.15, 0.3), 0.0, side * u(0.15, 0.2)
    if m == "stays still":
        return u(0.3, 0.7), u(0.3, 0.7), 0.0, 0.0
    raise ValueError(f"no initial conditions for motion {m!r}")


def draw_constants(mode: str, rng: np.random.Generator, spec: LooseSpec = LOOSE) -> Constants:
    """Constants for one physics clip in ``mode`` ("real" or "loose")."""
    if mode == "real":
        return REAL
    if mode != "loose":
        raise ValueError(f"unknown physics mode {mode!r}; valid modes: {', '.join(MODES)}")
    if rng.uniform() < spec.p_near_real:
        tol = spec.near_real_tol
        f = rng.uniform(1 - tol, 1 + tol, size=3)
        return Constants(REAL.g * f[0], min(1.0, REAL.restitution * f[1]), REAL.friction * f[2])
    return Constants(
        g=REAL.g * rng.uniform(*spec.g_range),
        restitution=min(1.0, REAL.restitution * rng.uniform(*spec.restitution_range)),
        friction=REAL.friction * rng.uniform(*spec.friction_range),
    )


@dataclass
class Trajectory:
    """Simulated centres at the requested times, plus floor-bounce times.

    ``x, y``: (B, N) arrays; ``floor_bounces``: per clip a list of times (s) of floor
    rebounds; ``wall_bounces`` likewise for the side walls.
    """

    x: np.ndarray
    y: np.ndarray
    floor_bounces: list[list[float]]
    wall_bounces: list[list[float]]


def simulate(
    init: InitialState,
    radius: np.ndarray,
    g: np.ndarray,
    restitution: np.ndarray,
    friction: np.ndarray,
    ballistic: np.ndarray,
    n_frames: int,
    fps: float,
    record_events: bool = True,
) -> Trajectory:
    """Simulate B objects and sample their centres at t = i / fps, i < n_frames.

    All arguments are (B,) arrays. ``ballistic`` False means a general-domain object: it moves
    at constant velocity and ignores gravity and walls. Deterministic and elementwise, so a
    clip's trajectory does not depend on what else is in the batch.
    """
    B = init.x.shape[0]
    x, y = init.x.astype(np.float64).copy(), init.y.astype(np.float64).copy()
    vx, vy = init.vx.astype(np.float64).copy(), init.vy.astype(np.float64).copy()
    r = np.asarray(radius, np.float64)
    g = np.where(ballistic, g, 0.0).astype(np.float64)
    e = np.asarray(restitution, np.float64)
    mu_g = np.where(ballistic, np.asarray(friction, np.float64) * g, 0.0)
    floor, left, right = 1.0 - r, r, 1.0 - r
    resting = np.zeros(B, bool)
    xs = np.empty((B, n_frames))
    ys = np.empty((B, n_frames))
    fb: list[list[float]] = [[] for _ in range(B)]
    wb: list[list[float]] = [[] for _ in range(B)]

    sub = max(1, int(round(SUBSTEP_HZ / fps)))
    dt = 1.0 / (fps * sub)
    # Loop invariants, each computed in the order the step's expressions use them (same floats).
    half_g_dt2 = 0.5 * g * dt * dt
    g_dt = g * dt
    all_ballistic = bool(ballistic.all())
    t = 0.0
    xs[:, 0], ys[:, 0] = x, y
    # The step skips the branches no clip is in (np.where with a uniform mask is one of its inputs),
    # which is most of the cost for the small batches of a fit: the floats are the same.
    for frame in range(1, n_frames):
        for _ in range(sub):
            # -- vertical, in flight: ballistic with an exact floor contact inside the step
            fly = ballistic & ~resting
            y_new = y + vy * dt + half_g_dt2
            vy_new = vy + g_dt
            hit = fly & (y_new > floor) & (vy_new > 0)
            if hit.any():
                dy = floor - y
                disc = np.sqrt(np.maximum(vy * vy + 2 * g * np.maximum(dy, 0), 0))
                with np.errstate(divide="ignore", invalid="ignore"):
                    tau = np.where(g > 0, (-vy + disc) / np.where(g > 0, g, 1), dy / np.where(vy > 0, vy, 1))
                tau = np.clip(tau, 0.0, dt)
                v_rebound = -e * (vy + g * tau)
                rest_now = hit & (-v_rebound < REST_SPEED)
                rem = dt - tau
                y_b = floor + v_rebound * rem + 0.5 * g * rem * rem
                vy_b = v_rebound + g * rem
                # A rebound that would dip below the floor again within the step is a rest.
                rest_now |= hit & (y_b > floor)
                bounce = hit & ~rest_now
                y_new = np.where(bounce, y_b, y_new)
                vy_new = np.where(bounce, vy_b, vy_new)
                y_new = np.where(rest_now, floor, y_new)
                vy_new = np.where(rest_now, 0.0, vy_new)
                if record_events:
                    for i in np.nonzero(bounce)[0]:
                        fb[i].append(t + float(tau[i]))
                resting = resting | rest_now
            if fly.all():
                y, vy = y_new, vy_new
            else:
                y = np.where(fly, y_new, np.where(ballistic, floor, y + vy * dt))
                vy = np.where(fly, vy_new, np.where(ballistic, 0.0, vy))

            # -- horizontal: free flight, or rolling with friction when resting on the floor
            roll = resting & ballistic
            if roll.any():
                speed = np.abs(vx)
                dec = mu_g * dt
                stops = roll & (speed <= dec)
                with np.errstate(divide="ignore", invalid="ignore"):
                    stop_dx = np.where(mu_g > 0, vx * speed / (2 * np.where(mu_g > 0, mu_g, 1)), 0.0)
                x_roll = np.where(stops, x + stop_dx, x + vx * dt - 0.5 * np.sign(vx) * mu_g * dt * dt)
                vx_roll = np.where(stops, 0.0, vx - np.sign(vx) * dec)
                x_new = np.where(roll, x_roll, x + vx * dt)
                vx_new = np.where(roll, vx_roll, vx)
            else:
                x_new, vx_new = x + vx * dt, vx
            # Walls reflect the excess with restitution (exact for linear motion within a step).
            if all_ballistic:
                over_r, over_l = x_new > right, x_new < left
            else:
                over_r, over_l = ballistic & (x_new > right), ballistic & (x_new < left)
            over = over_r | over_l
            if over.any():
                if record_events:
                    for i in np.nonzero(over)[0]:
                        wb[i].append(t + dt)
                x_new = np.where(over_r, right - e * (x_new - right), x_new)
                x_new = np.where(over_l, left + e * (left - x_new), x_new)
                vx_new = np.where(over, -e * vx_new, vx_new)
            x, vx = x_new, vx_new
            t += dt
        xs[:, frame], ys[:, frame] = x, y
    return Trajectory(xs, ys, fb, wb)
