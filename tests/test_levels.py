"""Two code levels and guidance: the bottom prior's spatial condition keeps it causal, the fast
sampler draws the naive sampler's codes with top codes and guidance, and guidance does what
its formula says."""

import pytest
import torch
from tiny import seeded

from vqgen.conditioning import for_sampling, guidance_scale
from vqgen.config import GUIDANCE, PriorConfig, SampleConfig, VQVAEConfig
from vqgen.errors import UsageError
from vqgen.models import TwoLevelPrior, build_prior, level_logits
from vqgen.sampling import sample_codes, sample_codes_naive, sample_levels

K, TOP, BOTTOM = 8, 3, 6  # codebook, top grid, bottom grid (top x 2)


def prior_cfg(grid: int = BOTTOM, top_grid: int = TOP, **kw) -> PriorConfig:
    return PriorConfig(
        codebook_size=K,
        grid=grid,
        channels=16,
        layers=3,
        num_labels=3,
        top_grid=top_grid,
        **{"condition": "label", "cond_dropout": 0.1, **kw},
    )


def two_level(**kw) -> TwoLevelPrior:
    torch.manual_seed(0)
    prior = build_prior(prior_cfg(**kw), prior_cfg(grid=TOP, top_grid=0, **kw))
    assert isinstance(prior, TwoLevelPrior)
    return prior.double().eval()


def random_top(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n, TOP, TOP), generator=seeded(seed))


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("position", [(0, 0), (2, 3), (5, 5)])
def test_bottom_prior_sees_only_earlier_codes_and_every_top_code(
    dilation: int, position: tuple[int, int]
) -> None:
    bottom = two_level(dilation=dilation).bottom
    i, j = position
    codes = torch.randint(0, K, (1, BOTTOM, BOTTOM))
    emb = bottom.embed(codes).detach().requires_grad_()  # (1, C, 6, 6)
    top_map = bottom.embed_top(random_top(1), 1).detach().requires_grad_()  # (1, C, 6, 6)
    c = bottom.embed_condition(torch.tensor([1]), 1)
    h = emb
    v = emb
    for block in bottom.blocks:
        v, h = block(v, h, bottom.pos, c, top_map)
    bottom.head(h)[0, :, i, j].sum().backward()
    seen = emb.grad.abs().sum(1)[0]  # (6, 6)
    later = torch.ones(BOTTOM, BOTTOM, dtype=torch.bool).flatten()
    later[: i * BOTTOM + j] = False
    assert seen.flatten()[later].sum() == 0  # nothing at or after (i, j) in raster order
    assert top_map.grad.abs().sum(1)[0, i, j] > 0  # the top codes over (i, j) reach it


def test_top_codes_change_the_bottom_logits_everywhere() -> None:
    prior = two_level()
    codes = torch.randint(0, K, (2, BOTTOM, BOTTOM))
    cond = torch.tensor([0, 2])
    a = prior.bottom(codes, cond, random_top(2, 0))
    b = prior.bottom(codes, cond, random_top(2, 1))
    assert (a - b).abs().amax(dim=1).min() > 0  # at every position of both grids


def test_hidden_condition_ignores_the_label_and_is_learned() -> None:
    prior = two_level()
    codes = [random_top(2), torch.randint(0, K, (2, BOTTOM, BOTTOM))]
    drop = torch.tensor([True, True])
    with torch.no_grad():
        prior.top.null_cond.fill_(0.3)  # a trained "none", not the zeros it starts from
    a = level_logits(prior, codes, torch.tensor([0, 1]), drop)
    b = level_logits(prior, codes, torch.tensor([2, 2]), drop)
    shown = level_logits(prior, codes, torch.tensor([0, 1]))
    for x, y, z in zip(a, b, shown, strict=True):
        assert torch.equal(x, y) and not torch.allclose(x, z)


@pytest.mark.parametrize("guidance", [1.0, 0.0, 2.5])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 3)])
def test_fast_bottom_sampler_matches_naive_with_top_codes_and_guidance(
    guidance: float, dilation: int, temperature: float, top_k: int | None
) -> None:
    bottom = two_level(dilation=dilation).bottom
    kw = dict(
        cond=torch.tensor([0, 1, 2]),
        top=random_top(3),
        guidance=guidance,
        temperature=temperature,
        top_k=top_k,
    )
    for seed in range(2):
        naive = sample_codes_naive(bottom, 3, generator=seeded(seed), **kw)
        fast = sample_codes(bottom, 3, generator=seeded(seed), **kw)
        assert torch.equal(fast, naive)


@pytest.mark.parametrize("condition,cond", [("label", [0, 2]), ("slice", [0.2, 0.9])])
def test_guidance_zero_draws_from_the_unconditional_half(condition: str, cond: list) -> None:
    top = two_level(condition=condition).top
    kw = dict(guidance=0.0, generator=seeded(3))
    a = sample_codes(top, 2, cond=torch.tensor(cond), **kw)
    b = sample_codes(top, 2, cond=torch.tensor(cond[::-1]), guidance=0.0, generator=seeded(3))
    assert torch.equal(a, b)  # whatever the condition, the same draws


def test_sample_levels_draws_top_then_bottom_told_the_top() -> None:
    prior = two_level()
    cond = torch.tensor([0, 1])
    top, bottom = sample_levels(prior, 2, cond=cond, guidance=1.5, generator=seeded(4))
    gen = seeded(4)
    top_naive = sample_codes_naive(prior.top, 2, cond=cond, guidance=1.5, generator=gen)
    bottom_naive = sample_codes_naive(
        prior.bottom, 2, cond=cond, top=top_naive, guidance=1.5, generator=gen
    )
    assert torch.equal(top, top_naive) and torch.equal(bottom, bottom_naive)


def test_two_level_state_dict_round_trip() -> None:
    prior = two_level(dilation=2)
    copy = build_prior(prior_cfg(dilation=2), prior_cfg(grid=TOP, top_grid=0, dilation=2))
    copy.load_state_dict(prior.state_dict())
    copy.double().eval()  # dropout off, as in `prior`
    codes = [random_top(2), torch.randint(0, K, (2, BOTTOM, BOTTOM))]
    cond = torch.tensor([1, 2])
    ours, theirs = level_logits(prior, codes, cond), level_logits(copy, codes, cond)
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "make,option",
    [
        (lambda: VQVAEConfig(levels=3), "--levels"),
        (lambda: VQVAEConfig(top_downsample=8), "--top-downsample"),
        (lambda: VQVAEConfig(size=24, downsample=4, levels=2, top_downsample=4), "--levels 2"),
        (lambda: PriorConfig(condition="none", cond_dropout=0.1), "--cond-dropout"),
        (lambda: PriorConfig(condition="label", cond_dropout=1.0), "--cond-dropout"),
        (lambda: SampleConfig(guidance=-1.0), "--guidance"),
    ],
)
def test_bad_level_and_guidance_settings_are_refused_by_name(make, option: str) -> None:
    with pytest.raises(UsageError, match=option):
        make()


def test_guidance_needs_a_prior_trained_with_cond_dropout() -> None:
    cfg = PriorConfig(condition="label", num_labels=2)
    meta = {"label_names": ["AD", "NC"]}
    with pytest.raises(UsageError, match=r"--guidance 2.0: .*--cond-dropout"):
        for_sampling(cfg, meta, SampleConfig(n=2, guidance=2.0))
    assert for_sampling(cfg, meta, SampleConfig(n=2)) is not None  # untold, it draws at 1


def test_guidance_defaults_to_what_the_prior_was_trained_for() -> None:
    guided = PriorConfig(condition="slice", cond_dropout=0.1)
    plain = PriorConfig(condition="slice")
    assert guidance_scale(guided, SampleConfig()) == GUIDANCE > 1
    assert guidance_scale(plain, SampleConfig()) == 1
    assert guidance_scale(guided, SampleConfig(guidance=0.5)) == 0.5
    assert guidance_scale(plain, SampleConfig(guidance=1.0)) == 1
