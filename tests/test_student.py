"""The causal student: attention rule, KV cache, training view, rollout, persistence."""

from __future__ import annotations

import json
import re

import pytest
import torch

from afd.methods.common import rollout_with_grad
from afd.student.backbones.transformer import CausalVideoTransformer
from afd.student.backbones.transformer_config import StudentConfig
from afd.student.cache import KVCache
from afd.student.rollout import rollout, rollout_noise
from afd.student.sample import guidance_kwargs
from afd.student.schedule import step_levels
from afd.text import get_text_encoder
from train_util import perturbed_model

PROMPTS = ["a small red ball falls on a black background",
           "a large blue square slides to the left on a gray background"]


def tiny_model(block_frames: int = 4, prediction: str = "x0", seed: int = 0,
               refine: int = 4) -> CausalVideoTransformer:
    """A small student whose zero-initialised branches are perturbed, so every path matters."""
    return perturbed_model(seed, block_frames=block_frames, prediction=prediction, refine=refine)


@pytest.fixture(scope="module")
def text():
    return get_text_encoder().encode(PROMPTS)


def clip(model, seed=0):
    c = model.config
    return torch.randn((2, c.frames, c.channels, c.height, c.width), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("block_frames", [4, 1])
def test_block_causal_mask(text, block_frames):
    """Changing block k+1 never changes the outputs of blocks <= k (clean and training views)."""
    model = tiny_model(block_frames)
    F = block_frames
    x, noised = clip(model, 0), clip(model, 1)
    t = torch.rand(2, model.config.frames)
    with torch.no_grad():
        base_clean, _ = model(x, torch.zeros(2, model.config.frames), text, clean=True)
        base_train = model.forward_train(x, noised, t, text)
        for k in range(model.config.n_blocks - 1):
            x2, n2 = x.clone(), noised.clone()
            x2[:, (k + 1) * F:] += 1.0
            n2[:, (k + 1) * F:] -= 1.0
            out_clean, _ = model(x2, torch.zeros(2, model.config.frames), text, clean=True)
            out_train = model.forward_train(x2, n2, t, text)
            upto = (k + 1) * F
            assert torch.equal(out_clean[:, :upto], base_clean[:, :upto])
            assert torch.allclose(out_train[:, :upto], base_train[:, :upto], atol=1e-6)
            assert not torch.allclose(out_train[:, upto:], base_train[:, upto:], atol=1e-3)


@pytest.mark.parametrize("refine", [0, 4])
def test_training_view_equals_inference_view(text, refine):
    """forward_train's prediction for block k == the cached inference call for block k."""
    model = tiny_model(refine=refine)
    F = model.config.block_frames
    x, noised = clip(model, 2), clip(model, 3)
    t = torch.rand(2, model.config.n_blocks).repeat_interleave(F, dim=1)
    with torch.no_grad():
        train = model.forward_train(x, noised, t, text)
        cache = None
        for k in range(model.config.n_blocks):
            sl = slice(k * F, (k + 1) * F)
            pred, same = model(noised[:, sl], t[:, sl], text, cache)
            assert same is cache  # a noised call never writes the cache
            torch.testing.assert_close(pred, train[:, sl], atol=2e-5, rtol=1e-4)
            _, cache = model(x[:, sl], torch.zeros(2, F), text, cache, clean=True)
        assert isinstance(cache, KVCache) and cache.n_frames == model.config.frames


def test_classifier_free_guidance(text):
    """Guidance runs prompt and null rows as one doubled batch with a doubled cache: a null text
    equal to the prompt gives the unguided rollout at any scale, the first step is
    ``null + w (prompt - null)`` of two separate calls, and cache and recompute agree."""
    model = tiny_model()
    noise = rollout_noise(PROMPTS, [0, 1], model, 3)
    levels = step_levels(3, 2.0)
    null = get_text_encoder().encode(["a video"] * 2)
    with torch.no_grad():
        plain = rollout(model, text, noise, levels, amp=False)
        same = rollout(model, text, noise, levels, amp=False, guidance=3.0, null_text=text)
        torch.testing.assert_close(same, plain, atol=1e-5, rtol=1e-5)
        guided = rollout(model, text, noise, levels, amp=False, guidance=2.0, null_text=null)
        assert not torch.allclose(guided, plain, atol=1e-3)
        torch.testing.assert_close(rollout(model, text, noise, levels, amp=False, guidance=2.0, null_text=null,
                                           use_cache=False), guided, atol=1e-5, rtol=1e-5)
        x, t = noise[:, 0, 0], torch.ones(2, model.config.block_frames)
        cond, unc = model(x, t, text)[0], model(x, t, null)[0]
        one = rollout(model, text, noise, [1.0], amp=False, n_blocks=1, guidance=2.0, null_text=null)
        torch.testing.assert_close(one, unc + 2.0 * (cond - unc), atol=1e-5, rtol=1e-5)
        # block 0's own scale: that block matches the rollout guided everywhere at that scale,
        # the later blocks the unguided one's continuation of it
        F = model.config.block_frames
        first = rollout(model, text, noise, levels, amp=False, guidance=1.0, first_guidance=2.0, null_text=null)
        torch.testing.assert_close(first[:, :F], guided[:, :F], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(first, rollout(model, text, noise, levels, amp=False, prefix=guided[:, :F]),
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="needs null_text"):
        rollout(model, text, noise, levels, guidance=2.0)
    with pytest.raises(ValueError, match="needs null_text"):
        rollout(model, text, noise, levels, first_guidance=2.0)
    # a guided config reaches every rollout of the student, the differentiable one included;
    # an explicit scale alone sets block 0's too
    model.config.guidance, model.config.null_prompt = 2.0, "a video"
    assert guidance_kwargs(model, 2)["guidance"] == 2.0 and guidance_kwargs(model, 2, 1.0)["null_text"] is None
    assert guidance_kwargs(model, 2)["first_guidance"] == 2.0
    model.config.first_guidance = 3.0
    kw = guidance_kwargs(model, 2)
    assert (kw["guidance"], kw["first_guidance"]) == (2.0, 3.0)
    assert guidance_kwargs(model, 2, 1.5)["first_guidance"] == 1.5
    assert guidance_kwargs(model, 2, 1.5, 2.5)["first_guidance"] == 2.5
    x0 = rollout_with_grad(model, PROMPTS, text, torch.Generator().manual_seed(0), amp=False)
    x0.square().mean().backward()
    assert model.patch_out.weight.grad is not None and model.patch_out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("block_frames", [4, 1])
def test_cache_and_recompute_give_the_same_rollout(text, block_frames):
    model = tiny_model(block_frames)
    noise = rollout_noise(PROMPTS, [0, 1], model, 3)
    levels = step_levels(3, 2.0)
    with torch.no_grad():
        a = rollout(model, text, noise, levels, use_cache=True, amp=False)
        b = rollout(model, text, noise, levels, use_cache=False, amp=False)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        # bf16 autocast: the two paths round differently; documented tolerance 0.05 max abs on
        # values of order 1 (observed: below 0.02).
        a16 = rollout(model, text, noise, levels, use_cache=True, amp=True)
        b16 = rollout(model, text, noise, levels, use_cache=False, amp=True)
        assert (a16 - b16).abs().max() < 0.05
        assert (a16 - a).abs().mean() < 0.05


def test_cache_is_explicit_and_not_mutated(text):
    model = tiny_model()
    F = model.config.block_frames
    x = clip(model)[:, :F]
    with torch.no_grad():
        _, c1 = model(x, torch.zeros(2, F), text, None, clean=True)
        keys_before = [k.clone() for k in c1.keys]
        _, c2 = model(x, torch.zeros(2, F), text, c1, clean=True)
    assert c1.n_frames == F and c2.n_frames == 2 * F
    assert all(torch.equal(a, b) for a, b in zip(keys_before, c1.keys))
    assert not any(isinstance(v, torch.Tensor) for v in vars(model).values())  # no hidden state
    with pytest.raises(ValueError, match="whole number"):
        bad = KVCache(1, c1.keys, c1.values)
        model(x, torch.ones(2, F), text, bad)


def test_rollout_is_deterministic_per_clip(text):
    model = tiny_model()
    both = rollout(model, text, rollout_noise(PROMPTS, [5, 6], model, 2), step_levels(2, 1.0))
    one = rollout(model, text.index(slice(1, 2)), rollout_noise(PROMPTS[1:], [6], model, 2), step_levels(2, 1.0))
    torch.testing.assert_close(both[1:], one, atol=1e-4, rtol=1e-4)
    other_seed = rollout_noise(PROMPTS[1:], [7], model, 2)
    assert not torch.equal(other_seed, rollout_noise(PROMPTS[1:], [6], model, 2))


def test_rollout_gradient_through_one_step_per_block(text):
    model = tiny_model()
    model.train()
    noise = rollout_noise(PROMPTS, [0, 1], model, 3)
    out = rollout(model, text, noise, step_levels(3, 1.0), grad_steps=[0, 2, 1], amp=False)
    assert out.requires_grad
    out.pow(2).mean().backward()
    assert model.patch_out.weight.grad is not None and model.patch_out.weight.grad.abs().sum() > 0
    with torch.no_grad():
        plain = rollout(model, text, noise, step_levels(3, 1.0), amp=False)
    assert not plain.requires_grad
    with pytest.raises(ValueError, match="grad_steps"):
        rollout(model, text, noise, step_levels(3, 1.0), grad_steps=[0, 3, 1])


@pytest.mark.parametrize("use_cache", [True, False])
def test_rollout_continues_a_prefix(text, use_cache):
    """Continuing the first P blocks of a rollout with the same noise gives the same later blocks."""
    model = tiny_model()
    F = model.config.block_frames
    noise = rollout_noise(PROMPTS, [3, 4], model, 2)
    levels = step_levels(2, 1.0)
    with torch.no_grad():
        full = rollout(model, text, noise, levels, amp=False, use_cache=use_cache)
        for P in (1, 2):
            cont = rollout(model, text, noise, levels, amp=False, use_cache=use_cache, prefix=full[:, :P * F])
            assert torch.equal(cont[:, :P * F], full[:, :P * F])
            torch.testing.assert_close(cont[:, P * F:], full[:, P * F:], atol=1e-5, rtol=1e-5)
        other = rollout(model, text, noise, levels, amp=False, use_cache=use_cache, prefix=-full[:, :F])
        assert not torch.allclose(other[:, F:], full[:, F:], atol=1e-3)  # the later blocks read the prefix
        with pytest.raises(ValueError, match="multiple of 4 frames"):
            rollout(model, text, noise, levels, prefix=full[:, :F + 1])
        with pytest.raises(ValueError, match="at least one of the 3 blocks"):
            rollout(model, text, noise, levels, prefix=full)


def test_first_block_gets_its_own_steps(text):
    """config.first_steps gives block 0 (no context) more steps; later blocks keep ``steps``."""
    import dataclasses

    model = tiny_model()
    model.config = dataclasses.replace(model.config, steps=2, shift=1.0, first_steps=5)
    first, levels = model.config.sampler_levels()
    assert first == step_levels(5, 1.0) and levels == step_levels(2, 1.0)
    assert model.config.sampler_levels(steps=8)[0] == step_levels(8, 1.0)  # never fewer than steps
    assert model.config.sampler_levels(first_steps=0)[0] == levels
    noise = rollout_noise(PROMPTS, [0, 1], model, 5)
    with torch.no_grad():
        default = rollout(model, text, noise, amp=False)
        explicit = rollout(model, text, noise, levels, first_levels=first, amp=False)
        plain = rollout(model, text, noise, levels, amp=False)
    assert torch.equal(default, explicit)
    assert not torch.allclose(default[:, :4], plain[:, :4], atol=1e-4)
    with pytest.raises(ValueError, match="expected"):
        rollout(model, text, noise[:, :, :4], amp=False)  # 5 levels in block 0 need 5 noise slices
    with pytest.raises(ValueError, match="grad_steps"):
        rollout(model, text, noise, levels, first_levels=first, grad_steps=[4, 2, 0])
    rollout(model, text, noise, levels, first_levels=first, grad_steps=[4, 1, 0], amp=False)
    with pytest.raises(ValueError, match="first_steps must be >= 0"):
        StudentConfig(first_steps=-1)


@pytest.mark.parametrize("prediction", ["x0", "velocity"])
def test_velocity_and_x0_views_agree(prediction):
    model = tiny_model(prediction=prediction)
    x_t, raw = torch.randn(2, 4, 3, 16, 16), torch.randn(2, 4, 3, 16, 16)
    t = torch.rand(2, 4) * 0.9 + 0.1
    x0 = model.to_x0(raw, x_t, t)
    v = model.to_velocity(raw, x_t, t)
    torch.testing.assert_close(x_t - t[..., None, None, None] * v, x0, atol=1e-5, rtol=1e-5)


def test_save_and_load_round_trip(tmp_path, text):
    model = tiny_model()
    model.save_pretrained(tmp_path / "s", extra={"note": "test"})
    meta = json.loads((tmp_path / "s" / "config.json").read_text())
    assert meta["format"] == "afd-student" and meta["config"]["dim"] == 32 and meta["extra"]["note"] == "test"
    loaded = CausalVideoTransformer.from_pretrained(tmp_path / "s")
    assert loaded.config == model.config
    noise = rollout_noise(PROMPTS, [0, 1], model, model.config.steps)
    with torch.no_grad():
        torch.testing.assert_close(rollout(model, text, noise, amp=False), rollout(loaded, text, noise, amp=False))


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such student"):
        CausalVideoTransformer.from_pretrained(tmp_path / "nope")
    tiny_model().save_pretrained(tmp_path / "s")
    (tmp_path / "s" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        CausalVideoTransformer.from_pretrained(tmp_path / "s")
    other = CausalVideoTransformer(StudentConfig(frames=12, height=16, width=16, patch=4, dim=64, depth=2, heads=2))
    other.save_pretrained(tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "config.json").read_text())
    meta["config"]["dim"] = 32
    (tmp_path / "o" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="has shape"):
        CausalVideoTransformer.from_pretrained(tmp_path / "o")
    (tmp_path / "o" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        CausalVideoTransformer.from_pretrained(tmp_path / "o")


def test_checkpoint_config_must_state_what_changes_the_model(tmp_path):
    tiny_model(block_frames=2).save_pretrained(tmp_path / "s")
    path = tmp_path / "s" / "config.json"
    meta = json.loads(path.read_text())

    def load_with(config: dict):
        path.write_text(json.dumps({**meta, "config": config}))
        return CausalVideoTransformer.from_pretrained(tmp_path / "s")

    # A missing block_frames would load the same weights as a chunk-wise student without a word.
    for key in ("block_frames", "prediction", "shift", "guidance"):
        with pytest.raises(ValueError, match=re.escape(f"{path}: missing required key '{key}'")):
            load_with({k: v for k, v in meta["config"].items() if k != key})
    # Fields that came after the shipped checkpoints default to how those checkpoints ran.
    kept = {k: v for k, v in meta["config"].items() if k not in StudentConfig.CHECKPOINT_MAY_OMIT}
    assert load_with(kept).config == StudentConfig(**kept)
    with pytest.raises(ValueError, match=re.escape(f"{path}: renoise: expected one of 'fresh', 'ddim', got 'euler'")):
        load_with({**meta["config"], "renoise": "euler"})
    with pytest.raises(ValueError, match=re.escape(f"{path}: unknown key 'dimm'")):
        load_with({**meta["config"], "dimm": 3})


def test_bad_input_shapes_are_clear(text):
    model = tiny_model()
    with pytest.raises(ValueError, match=r"student input must be \(B, T, 3, 16, 16\)"):
        model(torch.zeros(2, 4, 3, 32, 32), torch.zeros(2, 4), text)
    with pytest.raises(ValueError, match="2 clips but 1 prompt"):
        model(torch.zeros(2, 4, 3, 16, 16), torch.zeros(2, 4), text.index(slice(0, 1)))
    with pytest.raises(ValueError, match="beyond the model's 12 frames"):
        model(torch.zeros(2, 16, 3, 16, 16), torch.zeros(2, 16), text, clean=True)
    with pytest.raises(ValueError, match="block_frames 5 must divide frames"):
        StudentConfig(frames=16, block_frames=5)


def test_text_encoder_caches_and_accepts_paraphrases():
    enc = get_text_encoder()
    a = enc.encode(["a tiny crimson sphere plummets onto a dark backdrop", PROMPTS[0]])
    assert a.tokens.shape == (2, 32, 384) and a.mask.dtype == torch.bool and a.pooled.shape == (2, 384)
    torch.testing.assert_close(a.pooled.norm(dim=-1), torch.ones(2))
    b = enc.encode([PROMPTS[0]])
    assert torch.equal(b.tokens[0], a.tokens[1])
    assert (a.tokens[0][~a.mask[0]] == 0).all()
    with pytest.raises(ValueError, match="non-empty"):
        enc.encode([""])
    with pytest.raises(TypeError):
        enc.encode(PROMPTS[0])


def test_text_encodings_are_stored_on_disk_and_read_without_the_model(tmp_path):
    """A second process (here: a second encoder) finds every prompt in the disk store and never
    loads the model; what it reads equals a fresh encoding, whatever the prompt's batch-mates; a
    damaged file is encoded again; AFD_TEXT_CACHE=off stores nothing."""
    from afd.text.encoder import TextEncoder

    first = TextEncoder(store_root=tmp_path)
    a = first.encode([PROMPTS[0], PROMPTS[1]])
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 2 and first.model is not None
    second = TextEncoder(store_root=tmp_path)
    b = second.encode([PROMPTS[1], PROMPTS[0]])
    assert second.model is None  # all read from the store
    for x, y in zip((a.tokens, a.mask, a.pooled), (b.tokens, b.mask, b.pooled)):
        assert torch.equal(x, y.flip(0))
    alone = TextEncoder(store_root=tmp_path / "other").encode([PROMPTS[1]])
    assert torch.equal(alone.tokens[0], b.tokens[0])  # stored alone: the same floats as encoded alone
    files[0].write_bytes(b"not safetensors")
    third = TextEncoder(store_root=tmp_path)
    c = third.encode([PROMPTS[0], PROMPTS[1]])
    assert third.model is not None and torch.equal(c.tokens, a.tokens)
    assert len(files[0].read_bytes()) > 100  # rewritten
    assert not list(tmp_path.glob("*/*/*.tmp"))


def test_text_store_location_follows_the_environment(monkeypatch, tmp_path):
    from afd.text.store import default_root

    monkeypatch.setenv("AFD_TEXT_CACHE", "off")
    assert default_root() is None
    monkeypatch.setenv("AFD_TEXT_CACHE", str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv("AFD_TEXT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_root() == tmp_path / "xdg" / "afd" / "text"


def test_refinement_head_reads_the_newest_clean_frame_it_may_see():
    """The refinement head's previous frame follows the attention rule: for a noised frame of
    block b, clean frame b*F - 1 (from the same call, or the cache's last frame); none in block 0."""
    model = tiny_model()
    F, T = model.config.block_frames, model.config.frames
    x = clip(model, 4)
    both = torch.cat([x, clip(model, 5)], dim=1)
    frames = torch.arange(T).repeat(2)
    clean = torch.cat([torch.ones(T, dtype=torch.bool), torch.zeros(T, dtype=torch.bool)])
    idx = torch.nonzero(~clean).squeeze(1)
    prev, has = model._newest_clean(both, frames, clean, None, idx)
    for j in range(T):
        b = j // F
        assert bool(has[j]) == (b > 0)
        assert torch.equal(prev[:, j], x[:, b * F - 1] if b else torch.zeros_like(x[:, 0]))
    text = get_text_encoder().encode(PROMPTS)
    with torch.no_grad():
        _, cache = model(x[:, :2 * F], torch.zeros(2, 2 * F), text, None, clean=True)
    assert torch.equal(cache.last_frame, x[:, 2 * F - 1])
    prev, has = model._newest_clean(x[:, 2 * F:3 * F], torch.arange(2 * F, 3 * F), torch.zeros(F, dtype=torch.bool),
                                    cache, torch.arange(F))
    assert bool(has.all()) and all(torch.equal(prev[:, j], x[:, 2 * F - 1]) for j in range(F))
