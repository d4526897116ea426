"""Reproduce LIBSVM's ``mushrooms`` file (8124 x 112) from the raw UCI Mushroom data.

The encoding is a one-hot code of the 22 categorical attributes of ``agaricus-lepiota.data``
(UCI Machine Learning Repository, Schlimmer 1987, CC BY 4.0), row order kept:

- label ``p`` (poisonous) -> ``1``, ``e`` (edible) -> ``2``;
- attribute 11 (stalk-root, the only one with missing values ``?``) is dropped;
- the other 21 attributes are encoded in attribute order; attribute ``j`` with value list ``V_j``
  (the order below, which is LIBSVM's) maps value ``v`` to feature ``offset_j + V_j.index(v) + 1``,
  where ``offset_j`` is the number of values of the attributes before it (1-based, consecutive);
- each line is ``LABEL IDX:1 IDX:1 ... `` (each entry followed by one space) and a newline.

The result has 112 features and 170,604 nonzeros (21 per row) and is byte-identical to the file
LIBSVM distributes (sha256 ``MUSHROOMS_SHA256``). Memory: the output text (about 0.9 MB) in memory.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

#: (1-based UCI attribute number, value codes in LIBSVM's order); attribute 11 is absent (dropped).
ATTRIBUTE_VALUES: tuple[tuple[int, str], ...] = (
    (1, "cbfksx"), (2, "ysgf"), (3, "cbegnpruwy"), (4, "tf"), (5, "acfmlnpsy"), (6, "af"), (7, "cw"),
    (8, "bn"), (9, "beghkonpruwy"), (10, "et"), (12, "yskf"), (13, "yskf"), (14, "cbegonpwy"),
    (15, "cbegonpwy"), (16, "p"), (17, "yown"), (18, "ton"), (19, "pnelf"), (20, "bhkonruwy"),
    (21, "acnsvy"), (22, "dgmlpuw"),
)
LABELS = {"p": "1", "e": "2"}
N_ATTRIBUTES = 22
N_FEATURES = sum(len(v) for _, v in ATTRIBUTE_VALUES)  # 112
MUSHROOMS_SHA256 = "f39a4eb628dc61a7d43760815b061c9e497aa728ce1ad8bde57a09ef6043b538"
UCI_SHA256 = "e65d082030501a3ebcbcd7c9f7c71aa9d28fdfff463bf4cf4716a3fe13ac360e"


def _column_maps() -> list[tuple[int, dict[str, int]]]:
    maps, offset = [], 0
    for attr, values in ATTRIBUTE_VALUES:
        maps.append((attr, {v: offset + i + 1 for i, v in enumerate(values)}))
        offset += len(values)
    return maps


def encode_mushrooms(text: str, source: str = "<text>") -> str:
    """Encode the UCI ``agaricus-lepiota.data`` text as LIBSVM text (see the module docstring).

    Raises ``DatasetFormatError`` naming ``source`` and the line for a row with the wrong number of
    fields, an unknown class or an attribute value outside the value lists above.
    """
    from .errors import DatasetFormatError

    maps = _column_maps()
    out = []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DatasetFormatError("the file is empty (expected 8124 comma-separated rows)", path=source, line=None)
    for lineno, raw in enumerate(lines, 1):
        fields = raw.rstrip("\r").split(",")
        if len(fields) != N_ATTRIBUTES + 1:
            raise DatasetFormatError(f"expected {N_ATTRIBUTES + 1} comma-separated fields, got {len(fields)}",
                                     path=source, line=lineno)
        label = LABELS.get(fields[0])
        if label is None:
            raise DatasetFormatError(f"class must be one of {sorted(LABELS)}, got {fields[0]!r}",
                                     path=source, line=lineno)
        parts = [label, " "]
        for attr, m in maps:
            idx = m.get(fields[attr])
            if idx is None:
                raise DatasetFormatError(f"attribute {attr} has value {fields[attr]!r}, allowed: {''.join(m)!r}",
                                         path=source, line=lineno)
            parts.append(f"{idx}:1 ")
        out.append("".join(parts))
    return "\n".join(out) + "\n"


def encode_mushrooms_file(src: str | Path) -> bytes:
    """Read ``src`` (``agaricus-lepiota.data``) and return the LIBSVM ``mushrooms`` bytes."""
    src = Path(src)
    return encode_mushrooms(src.read_text(encoding="ascii"), source=str(src)).encode("ascii")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
