"""The base's flow-matching error at each sampler level under its own clean-context view
(``forward_train``) and under Astrolabe's noised-context view (``afd.context=noised``), on the same
forward-noised copies of 16 of its own rollouts: the control behind reports/update-gate/analysis.md
("Astrolabe's context"). `python scripts/context_view_check.py` (a few seconds on a CPU)."""
import torch

from afd.losses import velocity
from afd.student.base import Student
from afd.student.sample import generate
from afd.world.splits import load_split

torch.manual_seed(0)
st = Student.load("base-state")
m = st.model
prompts = load_split("physics-train")[:16]
clips = generate(m, prompts, list(range(16)), amp=False)
x0 = st.codec.encode(clips)
text = st.encode_text(prompts)
g = torch.Generator().manual_seed(0)
eps = torch.randn(x0.shape, generator=g)
for lv in m.config.sampler_levels()[1]:
    t = torch.full(x0.shape[:2], lv)
    x_t = (1 - lv) * x0 + lv * eps
    with torch.no_grad():
        errs = {c: (velocity(m, x0, x_t, t, text, None, c) - (eps - x0)).pow(2).mean().item()
                for c in ("clean", "noised")}
    print(f"t={lv:.3f} clean {errs['clean']:.4f} noised {errs['noised']:.4f} ratio {errs['noised']/errs['clean']:.1f}")
