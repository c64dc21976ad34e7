"""A two-level run's samples drawn with other guidance or temperature at one level, scored on
the validate split (the test split chooses nothing): does the top prior or the bottom prior
make the samples' holes?

    .venv/bin/python bench/level_sampling.py RUN OUT.json [guidance=1.5] [bottom.guidance=1]

`key=value` sets a sampling option (guidance, temperature) at both levels, `top.key=value` or
`bottom.key=value` at one; unset options are as `vqgen sample` draws them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from demo_variants import print_rows

from vqgen import inference, sampling
from vqgen.config import EvalConfig
from vqgen.evaluate import evaluate
from vqgen.models import prior_levels


def options(settings: list[str]) -> dict[str, dict[str, float]]:
    """['guidance=2', 'bottom.guidance=1'] -> {'top': {'guidance': 2.0}, 'bottom': {...}}."""
    found: dict[str, dict[str, float]] = {"top": {}, "bottom": {}}
    for setting in settings:
        key, value = setting.split("=", 1)
        level, _, name = key.rpartition(".")
        for at in [level] if level else ["top", "bottom"]:
            found[at][name] = float(value)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path, help="the report, *.json")
    parser.add_argument("settings", nargs="*", help="[top.|bottom.]key=value")
    args = parser.parse_args()
    per_level = options(args.settings)

    def sample_levels(prior, n, **shared):
        codes = []
        for name, level in zip(["top", "bottom"], prior_levels(prior), strict=True):
            given = shared | per_level[name]
            top = codes[-1] if codes else None
            codes.append(sampling.sample_codes(level, n, top=top, **given))
        return codes

    inference.sample_levels = sample_levels  # what evaluate's draw calls
    report = evaluate(args.run, EvalConfig("validate", seed=0), out=args.out)
    print_rows(" ".join(args.settings) or str(args.run), report)


if __name__ == "__main__":
    main()
