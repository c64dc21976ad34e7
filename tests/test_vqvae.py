"""VQVAE: shapes, gradients, the public encode/codes/decode_codes round trip, state, errors,
and the loss that trains it."""

import pytest
import torch
import torch.nn.functional as F

from vqgen.config import VQLossConfig, VQVAEConfig
from vqgen.losses import VQLoss
from vqgen.models.vqvae import VQVAE

KINDS = ["st", "ema"]


def tiny(
    kind: str = "ema", downsample: int = 4, size: int = 16, levels: int = 1, top: int = 2
) -> VQVAE:
    cfg = VQVAEConfig(
        size=size,
        hidden=16,
        res_blocks=1,
        downsample=downsample,
        levels=levels,
        top_downsample=top,
        codebook_size=8,
        code_dim=4,
        quantizer=kind,
    )
    return VQVAE(cfg)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("downsample", "size"), [(2, 16), (4, 16), (8, 16), (8, 32)])
def test_shapes(kind: str, downsample: int, size: int) -> None:
    torch.manual_seed(0)
    model = tiny(kind, downsample, size)
    x = torch.rand(2, 1, size, size)
    g = size // downsample
    x_hat, (q,) = model(x)
    assert x_hat.shape == x.shape
    assert model.encode(x).shape == (2, 4, g, g)
    assert q.z_q.shape == (2, 4, g, g)
    assert q.codes.shape == (2, g, g) and q.codes.dtype == torch.long
    assert q.loss.shape == () and q.perplexity.shape == ()
    assert [c.shape for c in model.codes(x)] == [(2, g, g)]
    assert model.decode_codes([q.codes]).shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("downsample", "top", "size"), [(2, 4, 32), (4, 2, 32), (2, 2, 16)])
def test_two_level_shapes(kind: str, downsample: int, top: int, size: int) -> None:
    torch.manual_seed(0)
    model = tiny(kind, downsample, size, levels=2, top=top)
    x = torch.rand(2, 1, size, size)
    g = size // downsample
    x_hat, levels = model(x)
    assert x_hat.shape == x.shape
    assert [q.codes.shape for q in levels] == [(2, g // top, g // top), (2, g, g)]
    assert [c.shape for c in model.codes(x)] == [(2, g // top, g // top), (2, g, g)]
    assert model.cfg.grids == [g // top, g]
    assert model.decode_codes([q.codes for q in levels]).shape == x.shape


def test_two_level_decoder_uses_both_levels() -> None:
    torch.manual_seed(5)
    model = tiny(size=32, downsample=2, levels=2, top=4).eval()
    top, bottom = model.codes(torch.rand(2, 1, 32, 32))
    image = model.decode_codes([top, bottom])
    assert not torch.allclose(image, model.decode_codes([(top + 1) % 8, bottom]))
    assert not torch.allclose(image, model.decode_codes([top, (bottom + 1) % 8]))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", [1, 2])
def test_encoder_gets_gradient_through_quantizer(kind: str, levels: int) -> None:
    torch.manual_seed(1)
    model = tiny(kind, levels=levels).train()
    x = torch.rand(2, 1, 16, 16)
    x_hat, _ = model(x)
    F.mse_loss(x_hat, x).backward()  # reconstruction only: reaches the encoders straight through
    encoders = [model.encoder] + ([model.top_encoder] if levels == 2 else [])
    for encoder in encoders:
        for name, p in encoder.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_first_training_batch_initialises_codebook(kind: str) -> None:
    torch.manual_seed(2)
    model = tiny(kind).train()
    x = torch.rand(4, 1, 16, 16)
    assert not model.quantizer.initialised
    model(x)
    assert model.quantizer.initialised
    z_e = model.encode(x).detach().permute(0, 2, 3, 1).reshape(-1, 4)  # (64, 4)
    codebook = model.quantizer.codebook.detach()
    spread = torch.cdist(z_e, z_e).max()
    # every code sits among the encoder outputs, not at its random start
    assert torch.cdist(codebook, z_e).min(1).values.max() < spread


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("levels", [1, 2])
def test_eval_codes_round_trip_and_no_mutation(kind: str, levels: int) -> None:
    torch.manual_seed(3)
    model = tiny(kind, levels=levels).train()
    for _ in range(2):
        model(torch.rand(4, 1, 16, 16))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 16, 16)
    x_hat, quantized = model(x)
    codes = model.codes(x)
    assert len(codes) == levels
    for c, q in zip(codes, quantized, strict=True):
        assert torch.equal(c, q.codes)
    assert torch.allclose(model.decode_codes(codes), x_hat, atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str) -> None:
    torch.manual_seed(4)
    model = tiny(kind).train()
    model(torch.rand(4, 1, 16, 16))
    copy = tiny(kind)
    copy.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 16, 16)
    (a, qa), (b, qb) = model.eval()(x), copy.eval()(x)
    assert torch.equal(a, b) and torch.equal(qa[0].codes, qb[0].codes)


def test_bad_inputs_fail_an_assertion_naming_the_argument() -> None:
    model = tiny()
    with pytest.raises(AssertionError, match="x"):
        model(torch.rand(2, 1, 8, 8))  # wrong size
    with pytest.raises(AssertionError, match="x"):
        model(torch.rand(2, 3, 16, 16))  # wrong channels
    with pytest.raises(AssertionError, match="x"):
        model.codes(torch.rand(1, 16, 16))  # missing batch axis
    with pytest.raises(AssertionError, match="x"):
        model.encode(torch.zeros(1, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(AssertionError, match="codes"):
        model.decode_codes([torch.zeros(1, 3, 3, dtype=torch.long)])
    with pytest.raises(AssertionError, match="z_q"):
        model.decode([torch.zeros(1, 5, 4, 4)])
    with pytest.raises(AssertionError, match="levels"):
        model.decode_codes([torch.zeros(1, 4, 4, dtype=torch.long)] * 2)


# -- the loss that trains it ---------------------------------------------------------------------


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("l1_weight", [0.0, 0.5])
def test_loss_is_mse_plus_weighted_l1_plus_each_quantizer_loss(levels: int, l1_weight: float):
    torch.manual_seed(0)
    model = tiny(levels=levels).eval()  # in eval the codebooks stay as they are between calls
    x = torch.rand(3, 1, 16, 16)
    batch = (x, torch.zeros(3, dtype=torch.long), torch.zeros(3))
    loss, scalars = VQLoss(VQLossConfig(l1_weight=l1_weight)).step(model, batch, 0)
    x_hat, qs = model(x)
    mse = F.mse_loss(x_hat, x)
    torch.testing.assert_close(
        loss, mse + l1_weight * F.l1_loss(x_hat, x) + sum(q.loss for q in qs)
    )
    assert scalars["loss"] == pytest.approx(loss.item())
    assert scalars["mse"] == pytest.approx(mse.item())
    assert scalars["perplexity"] == pytest.approx(qs[-1].perplexity.item())
    assert ("perplexity_top" in scalars) == (levels == 2)
