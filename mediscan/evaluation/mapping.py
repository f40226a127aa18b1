"""Evaluate a model on data with other labels: map model classes onto the data's classes.

    mediscan evaluate RUN OTHER --map 'glioma,meningioma,pituitary=tumor' --map 'notumor=no'

1. `parse_mapping(specs, model_classes)` -> {"glioma": "tumor", ..., "notumor": "no"}; every
   model class must be mapped (an omitted class is an error naming it).
2. `resolve_target_order(mapping, data_classes)` -> {"tumor": "yes", "no": "no"}: each target
   name matched to the data folder's class name, case-insensitively and with synonyms
   ("yes"~"tumor", "no"~"notumor"/"no_tumor"/"healthy", ...). Every data class must match a
   target; a target that matches no data class keeps its own name.
3. `map_probabilities(probs, model_classes, mapping, targets)` sums the probabilities of the
   model classes that share a target -> (N, len(targets)).

Put together (`apply_target_names` does step 2's renaming)::

    mapping = parse_mapping(specs, model_classes)
    mapping = apply_target_names(mapping, resolve_target_order(mapping, folder.classes))
    classes = list(folder.classes) + [t for t in mapping_targets(mapping)
                                      if t not in folder.classes]
    probs = map_probabilities(probs, model_classes, mapping, classes)  # column i = class i
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mediscan.evaluation.metrics import normalize_name

SYNONYMS: tuple[frozenset[str], ...] = (
    frozenset({"yes", "tumor", "tumour", "tumors", "tumours", "positive", "abnormal",
               "parasitized", "parasitised", "infected", "disease", "diseased", "lesion"}),
    frozenset({"no", "notumor", "notumour", "normal", "healthy", "negative", "uninfected",
               "none", "nofinding", "nolesion", "nodisease"}),
)


class MappingError(ValueError):
    """A --map specification that does not fit the model's or the data's classes."""


def _split_spec(spec: str) -> tuple[list[str], str]:
    """'a, b = x' -> (["a", "b"], "x")."""
    if spec.count("=") != 1:
        raise MappingError(
            f"mapping {spec!r} must look like 'source1,source2=target' (exactly one '=')"
        )
    left, target = (part.strip() for part in spec.split("="))
    sources = [s.strip() for s in left.split(",") if s.strip()]
    if not sources or not target:
        raise MappingError(f"mapping {spec!r} needs source classes left of '=' and a target right")
    return sources, target


def _read_specs(specs: Sequence[str]) -> list[str]:
    """Expand arguments that name a mapping file (one 'a,b=x' per line, '#' comments)."""
    lines: list[str] = []
    for spec in specs:
        path = Path(spec)
        if "=" in spec:
            lines.append(spec)
        elif path.is_file():
            for raw in path.read_text(encoding="utf-8").splitlines():
                line = raw.split("#", 1)[0].strip()
                if line:
                    lines.append(line)
        else:
            raise MappingError(f"mapping {spec!r} is neither 'a,b=target' nor an existing file")
    return lines


def _match_source(name: str, source_classes: Sequence[str]) -> str:
    """The source class called `name` (exactly, else ignoring case and punctuation)."""
    if name in source_classes:
        return name
    hits = [c for c in source_classes if normalize_name(c) == normalize_name(name)]
    if len(hits) != 1:
        raise MappingError(
            f"{name!r} in --map is not a class of the model; its classes are: "
            f"{', '.join(source_classes)}"
        )
    return hits[0]


def parse_mapping(specs: Sequence[str], source_classes: Sequence[str]) -> dict[str, str]:
    """Parse --map arguments (or mapping files) into {model class: target}; no specs = identity."""
    source_classes = [str(c) for c in source_classes]
    lines = _read_specs(specs)
    if not lines:
        return {c: c for c in source_classes}
    mapping: dict[str, str] = {}
    for line in lines:
        sources, target = _split_spec(line)
        for name in sources:
            source = _match_source(name, source_classes)
            if mapping.get(source, target) != target:
                raise MappingError(
                    f"class {source!r} is mapped twice: to {mapping[source]!r} and to {target!r}"
                )
            mapping[source] = target
    missing = [c for c in source_classes if c not in mapping]
    if missing:
        raise MappingError(
            f"model classes not mapped: {', '.join(missing)}. Every class needs a target, "
            f"e.g. --map '{','.join(missing)}=<target>'"
        )
    return {c: mapping[c] for c in source_classes}


def mapping_targets(mapping: dict[str, str]) -> list[str]:
    """Distinct targets in order of first appearance."""
    return list(dict.fromkeys(mapping.values()))


def map_probabilities(
    probs, source_classes: Sequence[str], mapping: dict[str, str],
    target_classes: Sequence[str] | None = None,
) -> np.ndarray:
    """(N, S) probabilities over model classes -> (N, T) over targets, summing merged classes."""
    p = np.asarray(probs, dtype=np.float64)
    sources = [str(c) for c in source_classes]
    targets = list(target_classes) if target_classes is not None else mapping_targets(mapping)
    if p.ndim != 2 or p.shape[1] != len(sources):
        raise ValueError(f"probs must be (N, {len(sources)}) for classes {sources}, got {p.shape}")
    missing = [c for c in sources if c not in mapping]
    if missing:
        raise MappingError(f"model classes not mapped: {', '.join(missing)}")
    unknown = sorted({t for t in mapping.values() if t not in targets})
    if unknown:
        raise MappingError(
            f"mapping targets {unknown} are not among the classes {targets}; a target that no "
            "data class matches must be added to the class list"
        )
    merge = np.zeros((len(sources), len(targets)))
    for i, source in enumerate(sources):
        merge[i, targets.index(mapping[source])] = 1.0
    return p @ merge


def _synonym_group(name: str) -> frozenset[str]:
    key = normalize_name(name)
    for group in SYNONYMS:
        if key in group:
            return group
    return frozenset({key})


def _matches(target: str, data_class: str) -> bool:
    """Equal ignoring case and punctuation, or synonyms ("yes" ~ "tumor")."""
    a, b = normalize_name(target), normalize_name(data_class)
    return a == b or b in _synonym_group(target)


def resolve_target_order(mapping: dict[str, str], data_classes: Sequence[str]) -> dict[str, str]:
    """{target: data class name}, matched ignoring case/punctuation or as synonyms; every data
    class must match exactly one target, and a target without a data class keeps its name."""
    targets = mapping_targets(mapping)
    resolved: dict[str, str] = {}
    for data_class in data_classes:
        exact = [t for t in targets if normalize_name(t) == normalize_name(data_class)]
        hits = exact or [t for t in targets if _matches(t, data_class)]
        if not hits:
            raise MappingError(
                f"data class {data_class!r} matches no mapping target; targets are: "
                f"{', '.join(targets)}. Map model classes onto it, e.g. "
                f"--map '<classes>={data_class}'"
            )
        if len(hits) > 1:
            raise MappingError(f"data class {data_class!r} matches several targets: {hits}")
        if hits[0] in resolved:
            raise MappingError(
                f"target {hits[0]!r} matches more than one data class "
                f"({resolved[hits[0]]}, {data_class}); name the targets exactly"
            )
        resolved[hits[0]] = str(data_class)
    return {t: resolved.get(t, t) for t in targets}


def apply_target_names(mapping: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """Rename a mapping's targets: {model class: names[target]}."""
    return {source: names.get(target, target) for source, target in mapping.items()}
