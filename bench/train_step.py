"""Images per second of one training step under the precision and compilation options, side by side.

    python3 bench/train_step.py --recipe cpu --sizes 96 128
    python3 bench/train_step.py --recipe default --sizes 224 --device cuda --batch 256
    python3 bench/train_step.py --recipe cpu --model efficientnet_lite1 --sizes 128 --variants fp32

The recipe's model, ImageNet weights, frozen stages and filters, optimizer and batch size, channels-last
where mediscan uses it, random inputs (a step costs the same whatever the pixels). Variants:
`fp32` (what training does on the CPU), `bf16` (autocast to bfloat16, what training does on a
GPU that supports it), `compile` (`torch.compile`, `mediscan train --compile`). Each variant
gets a fresh model; warm-up steps (compilation included) are timed apart from the measured
steps. On a CPU the heap keeps freed memory for reuse, as training does (`mediscan.heap`);
`--plain-heap` leaves glibc's defaults, and `--train-depthwise` trains the 5x5 depthwise filters the `cpu`
recipe keeps fixed (`mediscan.training.freezing`), for those A/Bs. Prints the command line, a table and one
JSON line; never asserts on time.
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

from bench_common import announce, emit, log, machine, table

VARIANTS = ("fp32", "bf16", "compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu", help="The recipe whose model and batch size to time.")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128], help="Input sizes in pixels.")
    parser.add_argument("--model", help="A registered model to time with the recipe's settings.")
    parser.add_argument("--batch", type=int, help="Batch size (default: the recipe's).")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"Comma-separated: {', '.join(VARIANTS)}.")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first (compilation happens here).")
    parser.add_argument("--steps", type=int, default=10, help="Timed steps.")
    parser.add_argument("--device", default="cpu", help="cpu or cuda.")
    parser.add_argument("--plain-heap", action="store_true",
                        help="Leave glibc malloc's thresholds as they are (training raises them: mediscan.heap).")
    parser.add_argument("--train-depthwise", action="store_true",
                        help="Train the 5x5 depthwise filters the recipe fixes (training.freezing): the A/B.")
    parser.add_argument("--json", action="store_true", help="Print only the JSON line.")
    args = parser.parse_args(argv)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def time_variant(recipe, variant: str, size: int, batch: int, args: argparse.Namespace) -> dict:
    """Warm-up seconds and images/s of `args.steps` training steps of a fresh model."""
    import torch

    from mediscan.forward import uses_channels_last
    from mediscan.models import create_model
    from mediscan.training.optim import create_optimizer
    from mediscan.training.freezing import freeze_pretrained

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(recipe.model, 4, pretrained=recipe.pretrained)
    freeze_pretrained(model, recipe)
    layout = torch.channels_last if uses_channels_last(device) else torch.contiguous_format
    model = model.to(device, memory_format=layout).train()
    network = torch.compile(model) if variant == "compile" else model
    optimizer = create_optimizer(model, recipe, device)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=layout)
    y = torch.randint(0, 4, (batch,), device=device)
    precision = torch.autocast(device.type, dtype=torch.bfloat16) if variant == "bf16" else nullcontext()

    def step() -> None:
        with precision:
            loss = torch.nn.functional.cross_entropy(network(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(steps: int) -> float:
        began = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - began

    warmup = timed(args.warmup)
    return {"size": size, "variant": variant, "warmup_seconds": warmup,
            "images_per_second": batch * args.steps / timed(args.steps)}


def main(argv: list[str] | None = None) -> None:
    from mediscan.heap import keep_freed_memory
    from mediscan.training.recipes import get_recipe

    args = parse_args(argv)
    command = announce(args.json)
    kept_heap = args.device == "cpu" and not args.plain_heap and keep_freed_memory()
    recipe = get_recipe(args.recipe).with_overrides(model=args.model,
                                                    freeze_depthwise=False if args.train_depthwise else None)
    batch = args.batch or recipe.batch_size
    rows = []
    for size in args.sizes:
        for variant in args.variants.split(","):
            log(f"{recipe.model} {size} px, batch {batch}: {variant}")
            rows.append(time_variant(recipe, variant, size, batch, args))
    fp32 = {row["size"]: row["images_per_second"] for row in rows if row["variant"] == "fp32"}
    for row in rows:
        row["vs_fp32"] = row["images_per_second"] / fp32[row["size"]] if row["size"] in fp32 else None
    result = {"command": command, "recipe": recipe.name, "model": recipe.model, "batch": batch,
              "frozen_early": recipe.freeze_early, "frozen_depthwise": recipe.freeze_depthwise,
              "kept_heap": kept_heap, "rows": rows, "machine": machine()}
    text = table(["size", "variant", "warm-up s", "train img/s", "vs fp32"],
                 [[str(r["size"]), r["variant"], f"{r['warmup_seconds']:.1f}", f"{r['images_per_second']:.1f}",
                   "-" if r["vs_fp32"] is None else f"{r['vs_fp32']:.2f}x"] for r in rows])
    emit(result, json_only=args.json, text=text)


if __name__ == "__main__":
    main()
