"""What a class label may look like.

Labels become class names of the model, column values analysts group by, folder names and
plot titles, so they follow one documented pattern: 1 to 64 characters, ASCII letters, digits,
``_``, ``-`` and ``.``, starting with a letter or digit (``colours_forward``, ``digit-7``,
``v1.2``). Anything else (spaces, quotes, newlines, non-ASCII, a 10,000-character name) is
refused: by the CLI and in manifests with an error, in a ``labelled/<label>/`` folder name by
quarantining the files under it.
"""

from __future__ import annotations

import re

from pipeline.errors import ConfigError

MAX_LABEL_LENGTH = 64
LABEL_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_LABEL_LENGTH - 1}}}")
LABEL_RULE = (
    f"a label is 1-{MAX_LABEL_LENGTH} characters: ASCII letters, digits, '_', '-' or '.', "
    "starting with a letter or digit"
)


class LabelError(ConfigError):
    """A label does not follow :data:`LABEL_PATTERN`."""


def label_problem(label: str) -> str | None:
    """Why ``label`` is not a valid label, or None if it is."""
    if LABEL_PATTERN.fullmatch(label):
        return None
    shown = label if len(label) <= 40 else label[:40] + "..."
    size = f" ({len(label):,} characters)" if len(label) > 40 else ""
    return f"{shown!r}{size} is not a valid label: {LABEL_RULE}"


def check_label(label: str) -> str:
    """Return ``label`` if valid.

    Raises:
        LabelError: it is not (the message says what a label may be).
    """
    problem = label_problem(label)
    if problem is not None:
        raise LabelError(problem)
    return label
