"""Scores -> advantages -> NFT weights (docs/method.md section 5): hand-computed cases, clipping, ranks."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from afd.methods.advantages import AdvantageConfig, compute_weights

EPS = 1e-4


def expected(rewards, baselines, a_max=5.0):
    """Reference mapping written out in plain Python (population std)."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    adv = [max(-a_max, min(a_max, (r - b) / (std + EPS))) for r, b in zip(rewards, baselines)]
    return std, adv, [min(1.0, max(0.0, 0.5 + 0.5 * a / a_max)) for a in adv]


def test_g1_uses_batch_mean():
    scores = torch.tensor([1.0, 2.0, 3.0, 6.0])
    out = compute_weights(scores, torch.arange(4))
    # mean 3, population std sqrt(14 / 4)
    std, adv, w = expected([1, 2, 3, 6], [3] * 4)
    assert std == pytest.approx(math.sqrt(3.5))
    assert out.std == pytest.approx(std)
    assert torch.allclose(out.baseline, torch.full((4,), 3.0))
    assert torch.allclose(out.advantages, torch.tensor(adv), atol=1e-6)
    assert torch.allclose(out.weights, torch.tensor(w), atol=1e-6)
    assert out.weights[2] == pytest.approx(0.5)
    assert out.summary["max_group_size"] == 1 and out.summary["n"] == 4


def test_population_std_not_sample_std():
    out = compute_weights(torch.tensor([0.0, 2.0]), torch.arange(2))
    assert out.std == pytest.approx(1.0)  # the sample std would be sqrt(2)
    assert torch.allclose(out.advantages, torch.tensor([-1.0, 1.0]) / (1 + EPS))


def test_g2_per_prompt_baseline_global_std():
    # Interleaved, non-contiguous ids: prompt 7 -> {1, 3}, prompt 2 -> {10, 14}.
    scores = torch.tensor([1.0, 10.0, 3.0, 14.0])
    out = compute_weights(scores, torch.tensor([7, 2, 7, 2]))
    assert torch.allclose(out.baseline, torch.tensor([2.0, 12.0, 2.0, 12.0]))
    # global std over all four scores (mean 7): sqrt((36 + 9 + 16 + 49) / 4)
    std, adv, w = expected([1, 10, 3, 14], [2, 12, 2, 12])
    assert out.std == pytest.approx(math.sqrt(27.5))
    assert torch.allclose(out.advantages, torch.tensor(adv), atol=1e-6)
    assert torch.allclose(out.weights, torch.tensor(w), atol=1e-6)
    assert out.summary["max_group_size"] == 2
    # The per-prompt baseline cancels the prompts' offset: same within-group contrast, same weights.
    shifted = compute_weights(scores + torch.tensor([0.0, 100.0, 0.0, 100.0]), torch.tensor([7, 2, 7, 2]))
    assert torch.allclose(shifted.advantages * shifted.std, out.advantages * out.std, atol=1e-4)


def test_singleton_among_groups_is_neutral():
    out = compute_weights(torch.tensor([1.0, 3.0, 50.0]), torch.tensor([0, 0, 1]))
    assert out.advantages[2] == 0 and out.weights[2] == 0.5
    assert out.advantages[0] < 0 < out.advantages[1]


def test_clipping_at_a_max():
    scores = torch.tensor([0.0] * 9 + [10.0])
    out = compute_weights(scores, torch.arange(10), AdvantageConfig(a_max=1.0))
    # mean 1, std sqrt((9 * 1 + 81) / 10) = 3: raw A = -1/3 (x9) and 3 -> clipped to 1
    assert out.std == pytest.approx(3.0)
    assert out.advantages[-1] == 1.0 and out.weights[-1] == 1.0
    assert torch.allclose(out.advantages[:9], torch.full((9,), -1 / (3 + EPS)))
    assert torch.allclose(out.weights[:9], torch.full((9,), 0.5 - 0.5 / (3 + EPS)))
    s = out.summary
    assert s["frac_clipped"] == pytest.approx(0.1)
    assert s["frac_w1"] == pytest.approx(0.1) and s["frac_w0"] == 0
    assert s["adv_max"] == 1.0 and s["weight_max"] == 1.0 and s["score_max"] == 10.0
    low = compute_weights(-scores, torch.arange(10), AdvantageConfig(a_max=1.0))
    assert low.weights[-1] == 0.0 and low.summary["frac_w0"] == pytest.approx(0.1)


def test_weights_are_affine_in_advantage_and_bounded():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, generator=g) * 3
    for a_max in (0.5, 2.0, 5.0):
        out = compute_weights(scores, torch.arange(64) // 4, AdvantageConfig(a_max=a_max))
        assert bool((out.weights >= 0).all() and (out.weights <= 1).all())
        assert bool((out.advantages.abs() <= a_max).all())
        assert torch.allclose(out.weights, 0.5 + 0.5 * out.advantages / a_max, atol=1e-6)
        # higher reward within a prompt -> no lower weight
        for k in range(16):
            idx = torch.arange(4 * k, 4 * k + 4)
            order = scores[idx].argsort()
            assert bool((out.weights[idx][order].diff() >= 0).all())


def test_ratio_reward():
    scores = torch.log(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    out = compute_weights(scores, torch.arange(4), AdvantageConfig(reward="ratio"))
    std, adv, w = expected([1, 2, 3, 6], [3] * 4)
    assert torch.allclose(out.rewards, torch.tensor([1.0, 2.0, 3.0, 6.0]), atol=1e-6)
    assert out.std == pytest.approx(std)
    assert torch.allclose(out.weights, torch.tensor(w), atol=1e-6)
    logit = compute_weights(scores, torch.arange(4))
    assert not torch.allclose(logit.weights, out.weights)
    with pytest.raises(ValueError, match="overflow"):
        compute_weights(torch.tensor([0.0, 1000.0]), torch.arange(2), AdvantageConfig(reward="ratio"))


def test_equal_scores_give_neutral_weights():
    out = compute_weights(torch.full((6,), 2.5), torch.arange(6) // 3)
    assert out.std == 0 and torch.equal(out.weights, torch.full((6,), 0.5))


def test_accepts_low_precision_scores_and_detaches():
    scores = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    out = compute_weights(scores.to(torch.bfloat16), torch.arange(3))
    assert out.weights.dtype == torch.float32 and not out.weights.requires_grad


class FakeWorld:
    """In-process all_gather for threads standing in for ranks (concatenation in rank order)."""

    def __init__(self, n: int):
        self.slots = [None] * n
        self.barrier = threading.Barrier(n, timeout=20)

    def gather_for(self, rank: int):
        def gather(x):
            self.slots[rank] = x
            self.barrier.wait()
            out = torch.cat(self.slots)
            self.barrier.wait()  # nobody overwrites a slot before everyone has read it
            return out
        return gather


def run_ranks(parts, cfg):
    world, results, errors = FakeWorld(len(parts)), [None] * len(parts), []

    def work(rank):
        try:
            results[rank] = compute_weights(*parts[rank], cfg, gather=world.gather_for(rank))
        except Exception as e:  # surfaced below
            # No barrier.abort() here: a rank released from the barrier a moment later would see
            # it broken and raise BrokenBarrierError instead of its own error. The barrier's
            # timeout is what keeps a rank that fails alone from hanging the test.
            errors.append(e)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(len(parts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results, errors


@pytest.mark.parametrize("G", [1, 4])
def test_gather_hook_matches_single_process(G):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(16, generator=g) * 2 + torch.arange(16) / 4
    ids = torch.arange(16) // G
    cfg = AdvantageConfig(a_max=1.5)
    full = compute_weights(scores, ids, cfg)
    # Two ranks, each with whole prompts, and each numbering its own prompts from 0.
    parts = [(scores[:8], ids[:8]), (scores[8:], ids[8:] - ids[8])]
    results, errors = run_ranks(parts, cfg)
    assert not errors
    for r in results:
        assert r.std == pytest.approx(full.std)
        assert r.summary == pytest.approx(full.summary)
    assert torch.allclose(torch.cat([r.weights for r in results]), full.weights, atol=1e-6)
    assert torch.allclose(torch.cat([r.baseline for r in results]), full.baseline, atol=1e-6)
    if G == 1:
        # the baseline is the global batch mean, not each rank's own mean
        assert torch.allclose(results[0].baseline, torch.full((8,), float(scores.double().mean())))


def test_non_finite_score_raises_on_every_rank():
    parts = [(torch.tensor([1.0, 2.0]), torch.arange(2)), (torch.tensor([float("nan"), 0.0]), torch.arange(2))]
    results, errors = run_ranks(parts, AdvantageConfig())
    assert len(errors) == 2 and all("non-finite" in str(e) for e in errors)


@pytest.mark.parametrize("scores, ids, match", [
    (torch.zeros(3), torch.arange(4), "3 scores but 4 group ids"),
    (torch.zeros(0), torch.zeros(0, dtype=torch.long), "empty"),
    (torch.zeros(2, 2), torch.arange(2), "1-D"),
    (torch.zeros(2), torch.zeros(2, 1, dtype=torch.long), "1-D"),
    (torch.tensor([1.0, float("inf")]), torch.arange(2), "non-finite"),
    (torch.tensor([1.0, float("nan")]), torch.arange(2), "non-finite"),
    (torch.zeros(2), torch.zeros(2), "integer"),
    (torch.arange(2), torch.arange(2), "floating"),
])
def test_errors(scores, ids, match):
    with pytest.raises(ValueError, match=match):
        compute_weights(scores, ids)


@pytest.mark.parametrize("kwargs", [{"reward": "prob"}, {"a_max": 0.0}, {"a_max": float("inf")}, {"std_eps": 0.0}])
def test_config_validation(kwargs):
    with pytest.raises(ValueError):
        AdvantageConfig(**kwargs)


def test_residual_std_ignores_per_prompt_offsets():
    # two prompts, G = 2; prompt 1's scores carry a large offset (free under the BT loss)
    scores = torch.tensor([0.1, -0.1, 100.1, 99.9])
    ids = torch.tensor([0, 0, 1, 1])
    plain = compute_weights(scores, ids, AdvantageConfig())
    resid = compute_weights(scores, ids, AdvantageConfig(std_over="residuals"))
    # residuals are +-0.1 with std 0.1: A = +-1 -> w = 0.5 +- 0.1
    torch.testing.assert_close(resid.weights, torch.tensor([0.6, 0.4, 0.6, 0.4]), atol=1e-3, rtol=0)
    assert float((plain.weights - 0.5).abs().max()) < 0.001  # squeezed by the offset
    assert resid.std == pytest.approx(0.1, abs=1e-6)
