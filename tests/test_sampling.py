"""Samplers: the fast one matches the naive reference; temperature, top-k, seeds, arguments."""

import pytest
import torch
from fixtures import example_cond
from tiny import G, K, seeded, tiny_prior

from vqgen.config import SampleConfig
from vqgen.errors import UsageError
from vqgen.models.pixelcnn import GatedPixelCNN
from vqgen.sampling import sample_codes, sample_codes_naive


@pytest.mark.parametrize(
    "condition,kernel,temperature,top_k,dropout,dilation",
    [
        ("none", 3, 1.0, None, 0.0, 1),
        ("none", 5, 0.7, 3, 0.0, 1),
        ("label", 3, 1.0, None, 0.0, 1),
        ("slice", 3, 1.3, 4, 0.0, 1),
        ("slice", 3, 1.0, None, 0.5, 1),
        ("slice", 5, 0.8, 4, 0.5, 1),
        ("slice", 3, 1.0, None, 0.0, 2),
        ("label", 5, 0.9, 4, 0.0, 2),
        ("none", 3, 1.0, None, 0.0, 4),
    ],
)
def test_fast_sampler_matches_naive(
    condition: str,
    kernel: int,
    temperature: float,
    top_k: int | None,
    dropout: float,
    dilation: int,
) -> None:
    prior = tiny_prior(condition, kernel=kernel, dropout=dropout, dilation=dilation)
    cond = example_cond(condition, 4)
    for seed in range(3):
        kw = dict(cond=cond, temperature=temperature, top_k=top_k)
        naive = sample_codes_naive(prior, 4, generator=seeded(seed), **kw)
        fast = sample_codes(prior, 4, generator=seeded(seed), **kw)
        assert torch.equal(fast, naive)
        assert fast.shape == (4, G, G) and fast.dtype == torch.long


@pytest.mark.parametrize("condition", ["none", "label"])
def test_fast_sampler_adds_the_same_positional_bias(condition: str) -> None:
    prior = tiny_prior(condition)
    with torch.no_grad():
        prior.pos.normal_(std=3.0)  # large enough to decide most codes
    cond = example_cond(condition, 4)
    for seed in range(2):
        naive = sample_codes_naive(prior, 4, cond=cond, generator=seeded(seed))
        fast = sample_codes(prior, 4, cond=cond, generator=seeded(seed))
        assert torch.equal(fast, naive)


def test_seed_decides_the_samples() -> None:
    prior = tiny_prior()
    a = sample_codes(prior, 4, generator=seeded(0))
    assert torch.equal(a, sample_codes(prior, 4, generator=seeded(0)))
    assert not torch.equal(a, sample_codes(prior, 4, generator=seeded(1)))
    assert ((a >= 0) & (a < K)).all()


def greedy(prior: GatedPixelCNN, n: int, cond: torch.Tensor | None) -> torch.Tensor:
    codes = torch.zeros(n, G, G, dtype=torch.long)
    with torch.no_grad():
        for i in range(G):
            for j in range(G):
                codes[:, i, j] = prior(codes, cond)[:, :, i, j].argmax(1)
    return codes


@pytest.mark.parametrize("sampler", [sample_codes, sample_codes_naive])
def test_cold_sampling_is_greedy(sampler) -> None:
    prior = tiny_prior("label")
    cond = example_cond("label", 3)
    expected = greedy(prior, 3, cond)
    for temperature, top_k in [(0.0, None), (1e-8, None), (1.0, 1)]:
        got = sampler(
            prior, 3, cond=cond, temperature=temperature, top_k=top_k, generator=seeded(7)
        )
        assert torch.equal(got, expected)


def test_top_k_only_draws_the_k_most_likely() -> None:
    prior = tiny_prior()
    codes = sample_codes(prior, 64, temperature=2.0, top_k=2, generator=seeded(0))
    with torch.no_grad():
        allowed = prior(codes).topk(2, dim=1).indices  # (n, 2, G, G), given the drawn prefix
    assert (allowed == codes[:, None]).any(1).all()
    assert (allowed[:, 1] == codes).any()  # not only the argmax


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_first_code_follows_the_prior(temperature: float) -> None:
    prior = tiny_prior()
    with torch.no_grad():
        logits = prior(torch.zeros(1, G, G, dtype=torch.long))[0, :, 0, 0]  # sees no codes
    expected = torch.softmax(logits / temperature, 0)
    first = sample_codes(prior, 2000, temperature=temperature, generator=seeded(0))[:, 0, 0]
    freq = torch.bincount(first, minlength=K) / first.numel()
    assert (freq - expected).abs().max() < 0.04


@pytest.mark.parametrize(
    "kw,option",
    [
        (dict(n=0), "--n"),
        (dict(temperature=-0.1), "--temperature"),
        (dict(temperature=float("nan")), "--temperature"),
        (dict(temperature=float("inf")), "--temperature"),
        (dict(top_k=0), "--top-k"),
        (dict(slice_pos=1.5), "--slice"),
    ],
)
def test_bad_sampling_options_are_refused_by_name(kw: dict, option: str) -> None:
    with pytest.raises(UsageError, match=option):
        SampleConfig(**kw)


@pytest.mark.parametrize("sampler", [sample_codes, sample_codes_naive])
def test_bad_arguments_fail_an_assertion(sampler) -> None:
    with pytest.raises(AssertionError):
        sampler(tiny_prior(), 0)


@pytest.mark.parametrize("sampler", [sample_codes, sample_codes_naive])
def test_conditional_prior_needs_cond(sampler) -> None:
    with pytest.raises(AssertionError, match="cond"):
        sampler(tiny_prior("slice"), 2)


def test_fast_sampler_restores_the_thread_count() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the sampler runs on one thread, then puts this back
    try:
        sample_codes(tiny_prior(), 1, generator=seeded(0))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
