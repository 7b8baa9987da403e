import pytest

from afd.world.splits import load_split


@pytest.fixture(scope="session")
def eval_prompts():
    """Every eval prompt twice (seeds 0 and 1): the calibration set."""
    prompts = load_split("physics-eval") + load_split("general-eval")
    jobs = [(p, k) for p in prompts for k in range(2)]
    return [p for p, _ in jobs], [s for _, s in jobs]
