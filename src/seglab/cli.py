"""The `seglab` console script: utilities that sit beside train.py and predict.py."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from seglab.demo import DEMO_SPLITS, write_demo_export


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seglab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="write the demo CVAT 'Segmentation Mask 1.1' export")
    demo.add_argument("path", help="folder to create (must not exist)")
    demo.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    for split, count in DEMO_SPLITS.items():
        demo.add_argument(
            f"--{split}", type=int, default=count, help=f"{split} images (default {count})"
        )
    args = parser.parse_args(argv)

    if args.command == "demo":
        splits = {split: getattr(args, split) for split in DEMO_SPLITS}
        path = write_demo_export(args.path, size=args.size, seed=args.seed, splits=splits)
        print(f"Wrote demo CVAT export ({sum(splits.values())} images) to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
