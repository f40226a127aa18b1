"""Milliseconds per batch of the training augmentation, on grey and colour batches, side by side.

    python3 bench/augment_speed.py --presets mri strong light --size 128 --batch 48

Times `BatchAugment` (and, for `mri`, the synthetic lesions training adds first) on
random 0..1 batches as the training loop sees them: grey images replicated to three channels,
or colour. One thread count as the process has (2 cores: torch's default). Prints the command,
a table and one JSON line; never asserts on time.
"""

from __future__ import annotations

import argparse
import time

from bench_common import announce, emit, log, machine, table

BRAIN_CLASSES = ["glioma", "meningioma", "notumor", "pituitary"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mri", "strong", "light"], help="Augmentation presets.")
    parser.add_argument("--size", type=int, default=128, help="Image side in pixels.")
    parser.add_argument("--batch", type=int, default=48, help="Images per batch.")
    parser.add_argument("--repeats", type=int, default=10, help="Timed batches per row (after one untimed).")
    parser.add_argument("--lesions", type=float, default=0.35,
                        help="With mri: share of normal images given a lesion (0: off).")
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    return parser.parse_args(argv)


def time_preset(preset: str, kind: str, args: argparse.Namespace) -> dict:
    """Mean milliseconds per batch of one preset on grey or colour batches."""
    import torch

    from mediscan.augment import BatchAugment
    from mediscan.training.recipes import get_recipe
    from mediscan.training.trainer import lesion_synthesis_for

    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, 1 if kind == "grey" else 3, args.size, args.size)
    images = torch.rand(shape, generator=generator).expand(args.batch, 3, args.size, args.size).contiguous()
    labels = torch.randint(0, 4, (args.batch,), generator=generator)
    augment = BatchAugment(preset, seed=0)
    recipe = get_recipe("cpu").with_overrides(augment=preset, lesions=args.lesions)
    lesions = lesion_synthesis_for(recipe, BRAIN_CLASSES, seed=0)

    def one_batch() -> None:
        x = images.clone()
        if lesions is not None:
            x, _ = lesions(x, labels)
        augment(x)

    one_batch()
    began = time.perf_counter()
    for _ in range(args.repeats):
        one_batch()
    ms = (time.perf_counter() - began) / args.repeats * 1000
    return {"preset": preset, "kind": kind, "ms_per_batch": ms, "images_per_second": args.batch / ms * 1000}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = announce(args.json)
    rows = []
    for preset in args.presets:
        for kind in ("grey", "colour"):
            log(f"{preset}, {kind} {args.size} px, batch {args.batch}")
            rows.append(time_preset(preset, kind, args))
    result = {"command": command, "size": args.size, "batch": args.batch, "lesions": args.lesions,
              "rows": rows, "machine": machine()}
    text = table(["preset", "images", "ms / batch", "images/s"],
                 [[r["preset"], r["kind"], f"{r['ms_per_batch']:.1f}", f"{r['images_per_second']:.0f}"]
                  for r in rows])
    emit(result, json_only=args.json, text=text)


if __name__ == "__main__":
    main()
