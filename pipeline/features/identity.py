"""What names cached features: the length of a feature vector, and the hashes of the settings that
change feature values.

Deliberately light (standard library only): the settings, the feature store and the DAG files
import it, and none of them may pull in TensorFlow by doing so.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Length of one image's feature vector: VGG-16's last convolution block has 512 channels,
#: averaged over the image (global average pooling).
FEATURE_DIM = 512
#: Bump when the extraction code changes the numbers it writes for the same settings.
EXTRACTOR_VERSION = 2
#: The frame encoder, as the stream settings name it.
ENCODER_NAME = "vgg16-gap"


def encoder_identity(weights_id: str, precision: str) -> dict[str, Any]:
    """The items of every stream's settings that say which encoder computed the numbers.

    Args:
        weights_id: ``'imagenet'``, ``'random-seed<N>'`` or ``'sha256:<hex>'`` of a weights file.
        precision: the resolved compute precision, ``'float32'`` or ``'bfloat16'``.
    """
    return {
        "extractor_version": EXTRACTOR_VERSION,
        "cnn": ENCODER_NAME,
        "cnn_weights": weights_id,
        "precision": precision,
    }


def short_hash(payload: dict[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``payload`` as canonical JSON (sorted keys).

    These digits name feature-store folders and rows on users' disks: the canonical form must
    not change, or every cached feature is computed again.
    """
    canonical = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
