"""VQVAE: shapes, gradients, the public encode/codes/decode_codes round trip, state, errors."""

import pytest
import torch
import torch.nn.functional as F

from vqgen.config import VQVAEConfig
from vqgen.models.vqvae import VQVAE

KINDS = ["st", "ema"]


def tiny(kind: str = "ema", downsample: int = 4, size: int = 16) -> VQVAE:
    cfg = VQVAEConfig(
        size=size,
        hidden=16,
        res_blocks=1,
        downsample=downsample,
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
    x_hat, q = model(x)
    assert x_hat.shape == x.shape
    assert model.encode(x).shape == (2, 4, g, g)
    assert q.z_q.shape == (2, 4, g, g)
    assert q.codes.shape == (2, g, g) and q.codes.dtype == torch.long
    assert q.loss.shape == () and q.perplexity.shape == ()
    assert model.codes(x).shape == (2, g, g)
    assert model.decode_codes(q.codes).shape == x.shape


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_gets_gradient_through_quantizer(kind: str) -> None:
    torch.manual_seed(1)
    model = tiny(kind).train()
    x = torch.rand(2, 1, 16, 16)
    x_hat, _ = model(x)
    F.mse_loss(x_hat, x).backward()  # reconstruction only: reaches the encoder straight through
    for name, p in model.encoder.named_parameters():
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
def test_eval_codes_round_trip_and_no_mutation(kind: str) -> None:
    torch.manual_seed(3)
    model = tiny(kind).train()
    for _ in range(2):
        model(torch.rand(4, 1, 16, 16))
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 16, 16)
    x_hat, q = model(x)
    codes = model.codes(x)
    assert torch.equal(codes, q.codes)
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
    assert torch.equal(a, b) and torch.equal(qa.codes, qb.codes)


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
        model.decode_codes(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(AssertionError, match="z_q"):
        model.decode(torch.zeros(1, 5, 4, 4))
