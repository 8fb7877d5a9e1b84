"""The public shape of the kernels' twins in precision.exact (their agreement with the kernels
is tested in test_losses.py and test_optim.py, through precision.exact.registry)."""
import numpy as np
import pytest

import precision as pr
from precision.exact import registry
from tests.helpers import same_bits

pytestmark = pytest.mark.filterwarnings("ignore::precision.formats.PrecisionWarning")


def test_an_optimizer_twin_by_name_steps_like_the_optimizer():
    rng = np.random.default_rng(5)
    p = rng.standard_normal(9).astype(np.float16)
    q = p.copy()
    opt = pr.optim.AdamW(lr=1e-2, betas=(0.8, 0.99), state_format="float32", convention="keras")
    twin = pr.exact.emulate("float32").optimizer("AdamW", lr=1e-2, betas=(0.8, 0.99),
                                                 convention="keras")
    for _ in range(3):
        g = rng.standard_normal(9).astype(np.float16)
        assert opt.step(p, g) is p and twin.step(q, g) is q
    assert same_bits(p, q).all()
    want, got = opt.state_of(p), twin.state_of(q)
    assert set(want) == set(got) and want["step"] == got["step"] == 3
    for name in ("exp_avg", "exp_avg_sq"):
        assert got[name].dtype == np.float32 and same_bits(want[name], got[name]).all()


def test_optimizer_twin_arguments():
    f32 = pr.exact.emulate("float32")
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        f32.optimizer("lion")
    with pytest.raises(ValueError, match="keeps its state in float64"):
        f32.optimizer(pr.optim.SGD(state_format="float64"))
    with pytest.raises(TypeError, match="settings go to the optimizer"):
        f32.optimizer(pr.optim.SGD(), lr=0.1)
    with pytest.raises(TypeError, match="needs lr"):
        f32.optimizer("sgd", convention="optax")                 # the class's own checks
    twin = f32.optimizer("sgd", lr=0.5)
    with pytest.raises(ValueError, match="not at least as wide"):
        twin.step(np.ones(2), np.ones(2))                        # float64 params, float32 A
    with pytest.raises(KeyError):
        twin.state_of(np.ones(2, np.float32))


def test_loss_twin_shortcuts_equal_the_loss_twin_and_infer_the_storage():
    rng = np.random.default_rng(1)
    x = pr.bfloat16.round(rng.standard_normal((3, 5)))
    t = pr.bfloat16.round(rng.dirichlet(np.ones(5), size=3))
    f32 = pr.exact.emulate("float32")
    full = f32.losses()
    assert same_bits(f32.softmax(x), full.softmax(x)).all()
    assert f32.softmax(x).dtype == x.dtype
    loss, grad = f32.softmax_cross_entropy(x, t, return_grad=True, reduction="sum")
    assert loss.dtype == x.dtype and grad.shape == x.shape
    assert same_bits(f32.kl_divergence(t, x, reduction="batchmean"),
                     f32.kl_divergence(t, x, reduction="mean")).all()
    with pytest.raises(ValueError, match="not at least as wide"):
        pr.exact.emulate("bfloat16").softmax(x.astype(np.float32))
    with pytest.raises(ValueError, match="transcendentals"):
        f32.losses(transcendentals="fast")
    with pytest.raises(ValueError, match="reduction"):
        f32.entropy(t, reduction="batchmean")


def test_the_registry_pairs_names_and_refuses_duplicates():
    names = [p.name for p in registry.pairings()]
    assert len(names) == len(set(names))
    assert registry.pairing("softmax").fast() is pr.softmax
    assert registry.pairing("optim.Adam").fast() is pr.optim.Adam
    with pytest.raises(ValueError, match="already paired"):
        registry.register("softmax", "precision.losses.softmax", "losses.softmax", "rows")
    with pytest.raises(ValueError, match="signature"):
        registry.pairings("matrices")
    with pytest.raises(TypeError, match="takes no options"):
        registry.pairing("optim.SGD").twin("float32", transcendentals="kernel")
