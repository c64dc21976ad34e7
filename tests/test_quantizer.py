"""VectorQuantizer: nearest codes, losses, EMA updates, dead-code restarts, init, state."""

import pytest
import torch
import torch.nn.functional as F

from vqgen.models.quantizer import VectorQuantizer, perplexity

KINDS = ["st", "ema"]


def ready(kind: str, k: int = 8, d: int = 4, **kwargs) -> VectorQuantizer:
    """A quantizer whose codebook counts as initialised, so training skips k-means."""
    q = VectorQuantizer(k, d, quantizer=kind, **kwargs)
    q.initialised.fill_(True)
    return q


def grid_of(vectors: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """(b*h*w, D) rows -> (b, D, h, w) map, row-major over (b, h, w)."""
    return vectors.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()


def buffers(q: VectorQuantizer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in q.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("training", [False, True])
def test_picks_nearest_code(kind: str, training: bool) -> None:
    torch.manual_seed(0)
    q = ready(kind, k=16, d=5, dead_code_threshold=0).train(training)
    codebook = q.codebook.detach().clone()
    z = torch.randn(2, 5, 3, 4)
    out = q(z)
    x = z.permute(0, 2, 3, 1).reshape(-1, 5)  # (24, 5)
    brute = torch.tensor(
        [min(range(16), key=lambda j, v=v: ((v - codebook[j]) ** 2).sum()) for v in x]
    )
    assert torch.equal(out.codes.flatten(), brute)
    assert torch.equal(torch.cdist(x, codebook).argmin(1), brute)
    assert out.codes.shape == (2, 3, 4) and out.codes.dtype == torch.long
    assert torch.allclose(out.z_q, grid_of(codebook[brute], 2, 3, 4), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_loss_matches_formula(kind: str) -> None:
    torch.manual_seed(1)
    q = ready(kind, beta=0.3, dead_code_threshold=0).train()
    codebook = q.codebook.detach().clone()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    z_q = grid_of(codebook[out.codes.flatten()], 2, 3, 3)
    mse = ((z - z_q) ** 2).mean()
    expected = 0.3 * mse if kind == "ema" else mse + 0.3 * mse
    assert torch.allclose(out.loss, expected, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_straight_through_gradient(kind: str) -> None:
    torch.manual_seed(2)
    q = ready(kind, dead_code_threshold=0).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    target = torch.randn(2, 4, 3, 3)
    z_q = q(z).z_q
    F.mse_loss(z_q, target).backward()
    # z_q's forward value is a code, but its gradient is the identity to z
    assert not torch.allclose(z_q, z)
    assert torch.allclose(z.grad, 2 * (z_q.detach() - target) / target.numel(), atol=1e-6)


def test_st_codebook_gets_gradient_ema_codebook_is_buffer() -> None:
    torch.manual_seed(3)
    st = ready("st", dead_code_threshold=0).train()
    st(torch.randn(2, 4, 3, 3)).loss.backward()
    assert st.codebook.grad is not None and st.codebook.grad.abs().sum() > 0
    ema = ready("ema")
    assert "codebook" not in dict(ema.named_parameters())
    assert "codebook" in dict(ema.named_buffers())


def test_ema_with_zero_decay_moves_used_codes_to_their_means() -> None:
    torch.manual_seed(4)
    q = ready("ema", k=6, d=3, decay=0.0, dead_code_threshold=0).train()
    before = q.codebook.clone()
    # vectors scattered around codes 0 and 2 only
    x = torch.cat([before[0] + 0.05 * torch.randn(5, 3), before[2] + 0.05 * torch.randn(3, 3)])
    out = q(grid_of(x, 1, 2, 4))
    codes = out.codes.flatten()
    assert set(codes.tolist()) == {0, 2}
    for j in range(6):
        if j in codes.tolist():
            assert torch.allclose(q.codebook[j], x[codes == j].mean(0), atol=1e-4)
            assert not torch.allclose(q.codebook[j], before[j])
        else:
            assert torch.equal(q.codebook[j], before[j])


def test_ema_decay_mixes_old_and_new() -> None:
    torch.manual_seed(5)
    q = VectorQuantizer(4, 2, quantizer="ema", decay=0.5, dead_code_threshold=0).train()
    x = torch.randn(64, 2)
    q(grid_of(x, 1, 8, 8))  # first batch: k-means init, then one EMA step
    code = q.codebook[0].clone()
    near = code + 0.01 * torch.randn(16, 2)  # all nearest to code 0
    q.usage.fill_(16.0)  # steady state: 16 vectors per code per batch
    q.embed_sum.copy_(q.codebook * 16.0)
    q(grid_of(near, 1, 4, 4))
    expected = (0.5 * code * 16 + 0.5 * near.sum(0)) / 16
    assert torch.allclose(q.codebook[0], expected, atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_dead_codes_restart_onto_encoder_outputs(kind: str) -> None:
    torch.manual_seed(6)
    q = ready(kind, k=8, d=4, decay=0.9, dead_code_threshold=2.0).train()
    with torch.no_grad():
        q.codebook[4:] = 100.0  # far from any data: never used
    q.usage.copy_(torch.tensor([10.0] * 4 + [0.5] * 4))
    x = torch.randn(32, 4)
    q(grid_of(x, 2, 4, 4))
    for j in range(4, 8):
        # each restarted code now sits on one of the batch's encoder outputs
        assert (x == q.codebook[j].detach()).all(1).any()
        assert q.usage[j] == 2.0  # a restarted code starts at the threshold
    if kind == "ema":
        ratio = q.embed_sum[4:] / q.usage[4:, None]
        assert torch.allclose(ratio, q.codebook[4:], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_init_from_encoder_outputs_once(kind: str) -> None:
    torch.manual_seed(7)
    q = VectorQuantizer(4, 2, quantizer=kind, dead_code_threshold=0).train()
    assert not q.initialised
    centres = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    x = centres.repeat(16, 1) + 0.1 * torch.randn(64, 2)  # four tight clusters
    q(grid_of(x, 1, 8, 8))
    assert q.initialised
    # k-means put one code on each cluster, far from the random start
    assert torch.cdist(centres, q.codebook.detach()).min(1).values.max() < 0.5
    after_init = q.codebook.detach().clone()
    q(grid_of(x + 100.0, 1, 8, 8))  # a second batch far away must not re-run the init
    # k-means would put a code on each shifted cluster; EMA moves one code to their mean
    assert torch.cdist(centres + 100.0, q.codebook.detach()).min() > 1.0
    if kind == "st":
        assert torch.equal(q.codebook.detach(), after_init)


def test_init_with_fewer_vectors_than_codes_gives_distinct_codes() -> None:
    torch.manual_seed(8)
    q = VectorQuantizer(16, 3, quantizer="ema", dead_code_threshold=0).train()
    x = torch.randn(4, 3)
    q(grid_of(x, 1, 2, 2))
    assert q.initialised
    assert torch.cdist(q.codebook, x).min(1).values.max() < 0.2  # all near the data
    assert torch.unique(q.codebook, dim=0).shape[0] == 16  # jittered apart


@pytest.mark.parametrize("kind", KINDS)
def test_eval_mutates_nothing(kind: str) -> None:
    torch.manual_seed(9)
    q = VectorQuantizer(8, 4, quantizer=kind).eval()
    state = buffers(q)
    z = torch.randn(2, 4, 3, 3)
    q(z)
    q.codes(z)
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not q.initialised


def test_codes_never_mutate_in_training_mode() -> None:
    q = VectorQuantizer(8, 4, quantizer="ema").train()
    state = buffers(q)
    q.codes(torch.randn(2, 4, 3, 3))
    assert all(torch.equal(v, state[k]) for k, v in q.state_dict().items())


def test_perplexity() -> None:
    k = 8
    q = ready("ema", k=k, d=4).eval()
    uniform = q.codebook[torch.arange(k).repeat(2)]  # every code twice
    assert torch.allclose(q(grid_of(uniform, 1, 4, 4)).perplexity, torch.tensor(float(k)))
    one = q.codebook[torch.full((16,), 3)]
    assert torch.allclose(q(grid_of(one, 1, 4, 4)).perplexity, torch.tensor(1.0))
    assert torch.allclose(perplexity(torch.tensor([2.0, 2.0, 0.0])), torch.tensor(2.0))


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str) -> None:
    torch.manual_seed(10)
    q = VectorQuantizer(8, 4, quantizer=kind).train()
    for _ in range(3):
        q(torch.randn(2, 4, 3, 3))
    copy = VectorQuantizer(8, 4, quantizer=kind)
    copy.load_state_dict(q.state_dict())
    assert copy.initialised
    z = torch.randn(2, 4, 3, 3)
    a, b = q.eval()(z), copy.eval()(z)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.z_q, b.z_q)
    assert torch.equal(a.loss, b.loss)


def test_lookup_and_bad_arguments() -> None:
    q = VectorQuantizer(8, 4)
    codes = torch.tensor([[[0, 7], [3, 3]]])
    assert torch.equal(q.lookup(codes)[0, :, 0, 1], q.codebook[7])
    with pytest.raises(AssertionError, match="z_e"):
        q(torch.randn(2, 5, 3, 3))
    with pytest.raises(AssertionError, match="z_e"):
        q(torch.randn(4, 3, 3))
    with pytest.raises(IndexError):
        q.lookup(torch.tensor([[[8]]]))
    with pytest.raises(AssertionError):
        q.lookup(codes.float())
    with pytest.raises(AssertionError):
        VectorQuantizer(8, 4, quantizer="gumbel")
    with pytest.raises(AssertionError):
        VectorQuantizer(8, 4, decay=1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_keeps_state_float32(kind: str) -> None:
    torch.manual_seed(11)
    q = VectorQuantizer(8, 4, quantizer=kind).train()
    z = torch.randn(2, 4, 3, 3).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    out.loss.backward()
    assert out.z_q.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert z.grad is not None
    assert all(v.dtype in (torch.float32, torch.bool) for v in q.state_dict().values())


@pytest.mark.parametrize("kind", KINDS)
def test_seeded_training_repeats(kind: str) -> None:
    """Init and restarts draw from torch's global RNG, so a seed fixes the whole codebook."""
    z = torch.randn(3, 2, 4, 4, 4)
    states = []
    for _ in range(2):
        torch.manual_seed(12)
        q = VectorQuantizer(16, 4, quantizer=kind, dead_code_threshold=2.0).train()
        for batch in z:
            q(batch)
        states.append(q.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
