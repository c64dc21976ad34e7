"""Gated PixelCNN prior: causality, conditioning, argument checks, round trip, learning."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from fixtures import example_cond
from tiny import G, K, tiny_prior

from vqgen.config import PriorConfig
from vqgen.errors import UsageError
from vqgen.inference import CodeSet, nll_bits
from vqgen.models.pixelcnn import GatedPixelCNN


def receptive_field(i: int, j: int, layers: int, kernel: int) -> torch.Tensor:
    """Positions that (i, j) must see: the rows above within reach, the row to its left."""
    reach = layers * (kernel // 2)
    rows = torch.arange(G)[:, None]
    cols = torch.arange(G)[None, :]
    above = (rows < i) & (rows >= i - reach) & ((cols - j).abs() <= reach)
    left = (rows == i) & (cols < j) & (cols >= j - reach)
    return above | left


@pytest.mark.parametrize(
    "kernel,layers,condition", [(3, 3, "none"), (5, 2, "none"), (3, 2, "label"), (3, 1, "slice")]
)
def test_sees_exactly_its_receptive_field(kernel: int, layers: int, condition: str) -> None:
    net = tiny_prior(condition, kernel=kernel, layers=layers)
    codes = torch.randint(0, K, (1, G, G), generator=torch.Generator().manual_seed(1))
    cond = example_cond(condition, 1)
    for i in range(G):
        for j in range(G):
            emb = net.embed(codes).detach().requires_grad_()  # (1, C, G, G)
            net.head(net.body(emb, cond))[0, :, i, j].sum().backward()
            seen = emb.grad.abs().sum(1)[0] > 0  # (G, G)
            expected = receptive_field(i, j, layers, kernel)
            assert torch.equal(seen, expected), f"position {(i, j)} sees {seen.nonzero().tolist()}"


def stacked_field(dilations: list[int], kernel: int) -> dict[tuple[int, int], set]:
    """Per position, the inputs the last horizontal stack sees, built layer by layer from the
    taps: a vertical tap (a rows up, b across) and a horizontal tap (t to the left), d apart."""
    p, cells = kernel // 2, [(i, j) for i in range(G) for j in range(G)]

    def inside(i: int, j: int) -> bool:
        return 0 <= i < G and 0 <= j < G

    v = {
        (i, j): {(i - a, j + b) for a in range(1, p + 1) for b in range(-p, p + 1)}
        for i, j in cells
    }
    v = {cell: {x for x in seen if inside(*x)} for cell, seen in v.items()}
    h = {(i, j): {(i, j - t) for t in range(1, p + 1) if j - t >= 0} | v[i, j] for i, j in cells}
    for d in dilations[1:]:
        v = {
            (i, j): set().union(
                *(
                    v[i - a * d, j + b * d]
                    for a in range(p + 1)
                    for b in range(-p, p + 1)
                    if inside(i - a * d, j + b * d)
                )
            )
            for i, j in cells
        }
        h = {
            (i, j): set().union(*(h[i, j - t * d] for t in range(p + 1) if j - t * d >= 0))
            | v[i, j]
            for i, j in cells
        }
    return h


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (3, 2), (3, 4), (5, 2)])
def test_a_dilated_prior_sees_exactly_its_taps(kernel: int, dilation: int) -> None:
    """With --dilation every position sees exactly what its layers' spaced taps reach: never
    itself or anything after it in raster order, and farther up than without."""
    from vqgen.models.pixelcnn import layer_dilations

    net = tiny_prior("slice", kernel=kernel, layers=3, dilation=dilation)
    field = stacked_field(layer_dilations(net.cfg), kernel)
    codes = torch.randint(0, K, (1, G, G), generator=torch.Generator().manual_seed(1))
    for i in range(G):
        for j in range(G):
            emb = net.embed(codes).detach().requires_grad_()
            net.head(net.body(emb, example_cond("slice", 1)))[0, :, i, j].sum().backward()
            seen = emb.grad.abs().sum(1)[0] > 0
            expected = torch.zeros(G, G, dtype=torch.bool)
            for r, c in field[i, j]:
                expected[r, c] = True
            if dilation == 1:
                assert torch.equal(expected, receptive_field(i, j, 3, kernel))
            assert torch.equal(seen, expected), f"position {(i, j)} sees {seen.nonzero().tolist()}"
            assert not (seen & ~raster_before(i, j)).any()
    if dilation > 1:  # the last position sees a row that three plain layers do not reach
        assert seen[G - 1 - 3 * (kernel // 2) - 1].any()


def test_dilation_must_be_a_power_of_two() -> None:
    with pytest.raises(UsageError, match="--dilation"):
        PriorConfig(dilation=3)
    with pytest.raises(UsageError, match="--dilation"):
        PriorConfig(dilation=0)


def raster_before(i: int, j: int) -> torch.Tensor:
    """Positions strictly before (i, j) in raster order, (G, G) bool."""
    return (torch.arange(G * G) < i * G + j).view(G, G)


def test_first_position_ignores_codes() -> None:
    net = tiny_prior()
    a = net(torch.zeros(2, G, G, dtype=torch.long))
    b = net(torch.randint(0, K, (2, G, G)))
    assert torch.equal(a[:, :, 0, 0], b[:, :, 0, 0])
    assert not torch.allclose(a[:, :, -1, -1], b[:, :, -1, -1])


def test_position_changes_logits_of_identical_contexts() -> None:
    net = tiny_prior(grid=16)
    codes = torch.zeros(1, 16, 16, dtype=torch.long)  # (5, 5) and (5, 10) see only code 0
    with torch.no_grad():
        net.pos.zero_()
        flat = net(codes)  # without a positional bias the stack is translation-equivariant
        net.pos.normal_()
        placed = net(codes)
    assert torch.allclose(flat[0, :, 5, 5], flat[0, :, 5, 10])
    assert (placed[0, :, 5, 5] - placed[0, :, 5, 10]).abs().max() > 1e-3


@pytest.mark.parametrize("condition", ["none", "label", "slice"])
def test_logits_shape(condition: str) -> None:
    net = tiny_prior(condition)
    logits = net(torch.randint(0, K, (4, G, G)), example_cond(condition, 4))
    assert logits.shape == (4, K, G, G)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "condition,a,b",
    [
        ("label", torch.tensor([0, 0]), torch.tensor([1, 2])),
        ("slice", torch.tensor([0.1, 0.1], dtype=torch.float64), torch.tensor([0.5, 0.9])),
    ],
)
def test_condition_changes_every_position(condition: str, a: torch.Tensor, b: torch.Tensor) -> None:
    net = tiny_prior(condition)
    codes = torch.randint(0, K, (2, G, G))
    diff = (net(codes, a) - net(codes, b)).abs().amax(1)  # (2, G, G)
    assert (diff > 1e-6).all()  # including (0, 0), which sees no codes


def test_unconditional_prior_ignores_cond() -> None:
    net = tiny_prior()
    codes = torch.randint(0, K, (2, G, G))
    assert torch.equal(net(codes), net(codes, torch.tensor([0, 1])))


@pytest.mark.parametrize(
    "condition,cond,match",
    [
        ("label", None, "cond is required"),
        ("label", torch.tensor([0.5, 0.5]), "integer labels"),
        ("label", torch.tensor([0, 1, 2]), r"shape \(2,\)"),
        ("slice", None, "cond is required"),
        ("slice", torch.tensor([0, 1]), "float slice positions"),
        ("slice", torch.zeros(2, 1), r"shape \(2,\)"),
    ],
)
def test_bad_cond_fails_an_assertion(condition: str, cond: torch.Tensor | None, match: str) -> None:
    """The CLI refuses these first (SampleConfig, conditioning.for_sampling); the model asserts."""
    net = tiny_prior(condition)
    with pytest.raises(AssertionError):
        net(torch.zeros(2, G, G, dtype=torch.long), cond)


@pytest.mark.parametrize(
    "codes,match",
    [
        (torch.zeros(G, G, dtype=torch.long), "codes must have shape"),
        (torch.zeros(1, G, G + 1, dtype=torch.long), "codes must have shape"),
        (torch.zeros(1, G, G), "integer tensor"),
    ],
)
def test_bad_codes_fail_an_assertion(codes: torch.Tensor, match: str) -> None:
    with pytest.raises(AssertionError):
        tiny_prior()(codes)


@pytest.mark.parametrize("code", [K, -1])
def test_codes_or_labels_out_of_range_are_an_error_not_a_wrong_answer(code: int) -> None:
    """Their range is checked where they are read (a code file, the API's decode); the model
    reads no values back, and the embedding refuses what lies outside it."""
    with pytest.raises(IndexError):
        tiny_prior()(torch.full((1, G, G), code))
    with pytest.raises(IndexError):
        tiny_prior("label")(torch.zeros(1, G, G, dtype=torch.long), torch.tensor([code]))


def test_bad_config_and_emb_fail_an_assertion() -> None:
    with pytest.raises(AssertionError, match="num_labels"):
        GatedPixelCNN(PriorConfig(codebook_size=K, grid=G, condition="label", num_labels=0))
    with pytest.raises(AssertionError, match="emb"):
        tiny_prior().body(torch.zeros(1, 3, G, G, dtype=torch.float64))


@pytest.mark.parametrize("condition,dilation", [("none", 1), ("slice", 1), ("slice", 2)])
def test_state_dict_round_trip(condition: str, dilation: int) -> None:
    net = tiny_prior(condition, dilation=dilation)
    torch.manual_seed(5)  # a second prior with other weights
    other = GatedPixelCNN(dataclasses.replace(net.cfg)).double().eval()
    codes, cond = torch.randint(0, K, (3, G, G)), example_cond(condition, 3)
    assert not torch.equal(other(codes, cond), net(codes, cond))
    other.load_state_dict(net.state_dict())
    assert torch.equal(other(codes, cond), net(codes, cond))


def test_bf16_autocast() -> None:
    net = GatedPixelCNN(PriorConfig(codebook_size=K, grid=G, channels=16, layers=3))
    codes = torch.randint(0, K, (2, G, G))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(codes)
    assert logits.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), net(codes), atol=0.1)


def markov_grids(n: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Code = (above + left) mod K, 0 outside the grid; a uniform draw instead w.p. eps."""
    c = torch.zeros(n, G + 1, G + 1, dtype=torch.long)  # one row and column of zeros
    noisy = torch.rand(n, G, G, generator=gen) < eps
    uniform = torch.randint(0, K, (n, G, G), generator=gen)
    for i in range(G):
        for j in range(G):
            rule = (c[:, i, j + 1] + c[:, i + 1, j]) % K
            c[:, i + 1, j + 1] = torch.where(noisy[:, i, j], uniform[:, i, j], rule)
    return c[:, 1:, 1:]


@pytest.mark.slow
def test_learns_a_markov_field_down_to_its_entropy() -> None:
    eps = 0.2
    p_rule, p_other = 1 - eps + eps / K, eps / K
    entropy = -(p_rule * math.log(p_rule) + (K - 1) * p_other * math.log(p_other))  # nats/code
    torch.manual_seed(0)
    net = GatedPixelCNN(PriorConfig(codebook_size=K, grid=G, channels=16, layers=3))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for codes in markov_grids(200 * 32, eps, gen).split(32):
        loss = F.cross_entropy(net(codes), codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    codes = markov_grids(1000, eps, gen)
    with torch.no_grad():
        nll = F.cross_entropy(net(codes), codes).item()
    assert entropy - 0.03 < nll < entropy + 0.1  # entropy 0.80 nats, log K = 2.08
    # the report's NLL, under bf16 autocast as a CPU with AVX512-BF16 or a GPU computes it
    split = CodeSet([codes.short()], torch.full((1000,), -1), torch.full((1000,), math.nan), ())
    exact, fast = (nll_bits(net, split, bf16=bf16)[0] for bf16 in (False, True))
    with torch.no_grad():  # nll_bits scores in eval mode: without dropout
        assert exact == pytest.approx(F.cross_entropy(net(codes), codes).item() / math.log(2))
    assert abs(fast - exact) < 0.005


def test_dropout_keeps_causality_and_is_off_in_eval() -> None:
    """In training, dropout only removes paths: no position sees past its receptive field; in
    eval it is off, so the prior (and the samplers) are deterministic."""
    net = tiny_prior(dropout=0.3).train()
    codes = torch.randint(0, K, (2, G, G), generator=torch.Generator().manual_seed(1))
    for i, j in [(0, 0), (2, 3), (G - 1, G - 1)]:
        emb = net.embed(codes).detach().requires_grad_()
        net.head(net.body(emb))[:, :, i, j].sum().backward()
        seen = emb.grad.abs().sum((0, 1)) > 0
        assert not (seen & ~receptive_field(i, j, 3, 3)).any(), f"position {(i, j)}"
    assert not torch.equal(net(codes), net(codes))  # a new dropout mask each call
    net.eval()
    assert torch.equal(net(codes), net(codes))


def test_dropout_outside_0_1_is_refused_by_name() -> None:
    with pytest.raises(UsageError, match="--dropout"):
        PriorConfig(dropout=1.0)
