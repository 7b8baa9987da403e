import os

import pytest

from afd.world.splits import load_split


@pytest.fixture(scope="session", autouse=True)
def text_store(tmp_path_factory):
    """The suite's own disk store of text encodings (afd/text/store.py), shared by every process
    it starts (and by every xdist worker: their base temps share a parent), so that no test reads
    or fills the user's store."""
    old = os.environ.get("AFD_TEXT_CACHE")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        store = tmp_path_factory.getbasetemp().parent / "text-store"
        store.mkdir(exist_ok=True)
    else:
        store = tmp_path_factory.mktemp("text-store")
    os.environ["AFD_TEXT_CACHE"] = str(store)
    yield os.environ["AFD_TEXT_CACHE"]
    if old is None:
        os.environ.pop("AFD_TEXT_CACHE", None)
    else:
        os.environ["AFD_TEXT_CACHE"] = old


@pytest.fixture(scope="session")
def eval_prompts():
    """Every eval prompt twice (seeds 0 and 1): the calibration set."""
    prompts = load_split("physics-eval") + load_split("general-eval")
    jobs = [(p, k) for p in prompts for k in range(2)]
    return [p for p, _ in jobs], [s for _, s in jobs]


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory):
    """A saved tiny student (dim 32, one layer, 2 steps) for fast runs of the adaptation loop."""
    from train_util import make_tiny_student

    return make_tiny_student(tmp_path_factory.mktemp("student") / "tiny")


@pytest.fixture(scope="session")
def tiny_state_student(tmp_path_factory):
    """A saved tiny chunk-wise state student (afd/world/state_codec.py)."""
    from train_util import make_tiny_student

    return make_tiny_student(tmp_path_factory.mktemp("student") / "tiny-state", codec="state", channels=10,
                             height=1, width=1, patch=1, video_size=32, project_blocks=True)


@pytest.fixture(scope="session")
def tiny_codec_dir(tmp_path_factory):
    """A saved tiny random frame codec (afd/student/codecs/learned.py): 4-channel 1x1 latents of 32x32 frames."""
    import torch

    from afd.student.codecs.learned import FrameAutoencoder, FrameCodecConfig

    torch.manual_seed(0)
    model = FrameAutoencoder(FrameCodecConfig(latent_channels=4, width=8, decoder_depth=2))
    return model.save_pretrained(tmp_path_factory.mktemp("codec") / "tiny-codec")


@pytest.fixture(scope="session")
def tiny_latent_student(tmp_path_factory, tiny_codec_dir):
    """A saved tiny chunk-wise latent student over ``tiny_codec_dir``'s latents."""
    from train_util import make_tiny_student

    return make_tiny_student(tmp_path_factory.mktemp("student") / "tiny-latent", codec="learned",
                             codec_path=str(tiny_codec_dir), channels=4, height=1, width=1, patch=1, video_size=32)
