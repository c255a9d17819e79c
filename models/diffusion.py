"""Angle-parameterised diffusion: the paper's step schedule and the deterministic angle-DDIM sampler.

A latent at angle d is ``z_d = cos d * z0 + sin d * eps`` (d in [0, pi/2]); the network predicts the
velocity ``v = cos d * eps - sin d * z0``. One DDIM step of size w maps z_d to
``z_{d-w} = cos w * z_d - sin w * v``. Every frame carries its own angle, so one sampler covers
generation, continuation (kept chunks stay at angle 0) and inpainting (angle 0 outside the gap):
frames outside ``target`` take steps of size 0 and are returned unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# The network, or a backend running it: (z [B, C, L], angles [B, L], tokens [B, S]) -> v [B, C, L].
VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def angle_schedule(steps: int) -> list[float]:
    """Angle steps in the order they are taken: w_t = pi/(6T) + 2*pi*t/(3T(T+1)) for t = T..1.

    They sum to pi/2 and the big steps come first (t = T), as in the paper.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = torch.arange(steps, 0, -1, dtype=torch.float64)
    w = math.pi / (6 * steps) + 2 * math.pi * t / (3 * steps * (steps + 1))
    return [float(x) for x in w]


def uniform_angle_schedule(steps: int) -> list[float]:
    """The ablation baseline: T equal steps of pi/(2T)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [math.pi / (2 * steps)] * steps


def guided_velocity(
    velocity: VelocityFn, z: Tensor, angles: Tensor, tokens: Tensor, null_token: int, scale: float | Tensor
) -> Tensor:
    """Classifier-free guidance with the conditional and unconditional passes batched as one call.

    z: [B, C, L]; angles: [B, L]; tokens: [B, S] -> v_u + scale * (v_c - v_u), [B, C, L].
    """
    b = z.shape[0]
    v = velocity(
        torch.cat([z, z], dim=0),
        torch.cat([angles, angles], dim=0),
        torch.cat([tokens, torch.full_like(tokens, null_token)], dim=0),
    )
    v_cond, v_uncond = v[:b], v[b:]
    return v_uncond + scale * (v_cond - v_uncond)


def ddim_sample(
    velocity: VelocityFn,
    z: Tensor,
    angles: Tensor,
    target: Tensor,
    tokens: Tensor,
    steps: int,
    guidance_scale: float | Tensor,
    null_token: int,
    schedule: list[float] | None = None,
) -> Tensor:
    """Denoise the ``target`` frames of a window from angle pi/2 to 0 in ``steps`` network calls.

    z: [B, C, L] latents (pure noise on target frames); angles: [B, L] current angle of every frame
    (pi/2 on target frames; 0 for kept chunks; pi/2 for untouched future chunks); target: [B, L] bool
    or 0/1 float; tokens: [B, S]. ``guidance_scale`` may be a tensor (an input of an exported graph).
    Returns the window with target frames at angle 0; other frames are unchanged.
    """
    schedule = angle_schedule(steps) if schedule is None else schedule
    if len(schedule) != steps:
        raise ValueError(f"schedule has {len(schedule)} steps, expected {steps}")
    mask = target.to(z.dtype)
    angles = angles.clone()
    for w in schedule:
        v = guided_velocity(velocity, z, angles, tokens, null_token, guidance_scale)
        step = mask * w  # [B, L]: zero on frames that are not being denoised
        z = torch.cos(step)[:, None] * z - torch.sin(step)[:, None] * v
        angles = (angles - step).clamp_min(0.0)
    return z
