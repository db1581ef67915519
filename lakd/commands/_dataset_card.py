"""The card of a user's `folder` dataset, for the commands that read shards or runs without a config
(`lakd eval`, `lakd report`).

A built-in dataset's card is known by name. A `folder` dataset's card is a user's file: `lakd shards build folder
--card FILE` records it in the manifest (``config.reader_options.card``) and `lakd train` in the run's config
(``data.card``). These helpers find that file and make it the `folder` card of this process, so class names and
palettes are the user's. A card that cannot be read is no error here: it names classes and colours, the scores
do not depend on it; the caller prints the note returned.
"""
from __future__ import annotations

from typing import Iterable, Optional

from lakd.data.cards import FOLDER

__all__ = ["FOLDER", "recorded_card", "use_export_card", "use_folder_card"]


def recorded_card(manifest) -> Optional[str]:
    """The card file a `folder` manifest was built with (None for other datasets or when it records none)."""
    if manifest is None or manifest.dataset != FOLDER:
        return None
    card = ((manifest.config or {}).get("reader_options") or {}).get("card")
    return str(card) if card else None


def use_export_card(meta: dict) -> Optional[str]:
    """For an export of a `folder` dataset: make the card its metadata records (``card``, written by `lakd
    train`) the card in use. Returns None, or the note of :func:`use_folder_card`."""
    if meta.get("dataset") != FOLDER:
        return None
    return use_folder_card([meta.get("card")], meta.get("num_classes"))


def use_folder_card(card_files: Iterable[Optional[str]], num_classes: Optional[int]) -> Optional[str]:
    """Make the first readable card of ``card_files`` with ``num_classes`` classes (any count when None) the
    `folder` card in use. Returns None, or a one-line note saying why the classes stay numbered."""
    from lakd.data.cards import use_card
    from lakd.data.user_card import use_card_file

    candidates = [c for c in dict.fromkeys(card_files) if c]
    if not candidates:
        return "the folder dataset's card is not recorded (manifest or config.yaml); classes are shown by number"
    reasons = []
    for path in candidates:
        try:
            card = use_card_file(path)
        except ValueError as exc:
            reasons.append(str(exc))
            continue
        if num_classes is None or card.num_classes == int(num_classes):
            return None
        use_card(None)
        reasons.append(f"dataset card {path} has {card.num_classes} classes, the model {num_classes}")
    return f"{'; '.join(reasons)}; classes are shown by number"
