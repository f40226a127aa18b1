"""The issue-6 Grad-CAM check: how often the CAM's peak lies inside the planted phantom mass.

    python bench/cam_pointing.py RUN                               # the model's default CAM layer
    python bench/cam_pointing.py RUN --layers layer4 layer3 layer2,layer3,layer4 --methods gradcam,layercam

RUN is a run trained on a phantom (`mediscan demo` writes mediscan-demo/run). Its test split
(split.json) is scored: for each tumour image the CAM of the predicted class is computed on the
model's preprocessed view and the mass's box from masses.json (in the data folder, or --masses)
is mapped onto that view; a hit is a CAM maximum inside the box (`--box lesion_box` also counts
the oedema and the CSF cleft). Prints the command, a table of hit rates with 95% Wilson
intervals per method and layer, and a JSON line (`--json`: the JSON line only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_common import announce, emit, machine, table

from mediscan.evaluation.localisation import load_boxes, pointing_game
from mediscan.explain import DEFAULT_METHOD, METHODS
from mediscan.predict import Classifier
from mediscan.run_folder import RunFolder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder trained on a phantom")
    parser.add_argument("--data", type=Path, help="phantom folder (default: model.json data.root)")
    parser.add_argument("--masses", type=Path, help="masses.json (default: DATA/masses.json)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--layers", nargs="+", default=[""],
                        help="layers to score, each a name or a fused 'layer3,layer4' (default: the model's)")
    parser.add_argument("--methods", default=DEFAULT_METHOD, help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--box", default="box", choices=("box", "lesion_box"))
    parser.add_argument("--json", action="store_true", help="print the JSON line only")
    return parser.parse_args(argv)


def run_benchmark(args: argparse.Namespace, command: str) -> dict:
    """Score every (method, layer) pair on the run's split."""
    run = RunFolder(args.run)
    meta = run.read_meta()
    data = args.data or Path(meta["data"]["root"])
    keys = getattr(run.read_split(), args.split)
    boxes = load_boxes(args.masses or data / "masses.json", keys, args.box)
    classifier = Classifier.load(args.run, device="cpu")
    rows = [pointing_game(classifier, data, boxes, method=method, layer=layer or None,
                          progress=not args.json).to_dict()
            for method in args.methods.split(",") for layer in args.layers]
    return {"command": command, "machine": machine(), "run": str(args.run), "split": args.split,
            "box": args.box, "input_size": classifier.preprocess.size,
            "default_layer": meta.get("cam_layer"), "results": rows}


def render(result: dict) -> str:
    rows = [[r["method"], r["layer"], f"{r['hits']}/{r['images']}",
             f"{100 * r['rate']:.1f} ({100 * r['ci'][0]:.1f}-{100 * r['ci'][1]:.1f})",
             " ".join(f"{name} {hits}/{n}" for name, (hits, n) in r["per_class"].items())]
            for r in result["results"]]
    head = (f"Grad-CAM peak inside the planted mass ({result['box']}), {result['split']} split of "
            f"{result['run']} at {result['input_size']} px")
    return head + "\n" + table(["method", "layer", "hits", "hit rate % (95% CI)", "per class"], rows)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = announce(args.json)
    result = run_benchmark(args, command)
    emit(result, json_only=args.json, text=render(result))


if __name__ == "__main__":
    main()
