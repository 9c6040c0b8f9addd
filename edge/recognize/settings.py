"""The daemon's ``[recognition]`` config section, declared beside the recognition it
configures and read by edge.config (stdlib only, importing only rank 0: ``check-config``
parses it without numpy or the models).

::

    [recognition]
    enabled = false            # opt-in: nothing of recognition is loaded while false
    gallery = "gallery.json"   # default: <[device] state_dir>/gallery.json (edge-face enroll's)
    threshold = 0.6            # default: the descriptor model's own (0.6 for dlib's ResNet)
    views = 3                  # views of a track that decide who it is
    min_face_size = 40         # faces less tall (frame pixels) are tracked, not recognized

A relative ``gallery`` is resolved against the config file's folder, like every path of the
config. Errors are :class:`edge.common.options.OptionError` naming the key, which the config
loader turns into its one-line ``ConfigError``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.common.config_rules import OptionSection
from edge.common.options import OptionError, is_number

GALLERY_FILE_NAME = "gallery.json"
# Distances between L2-normalised descriptors lie in [0, 2].
MAX_THRESHOLD = 2.0
MAX_VIEWS = 10
# The recognition accuracy measured from a frame falls below 100% at 40 px faces (README,
# "Recognition"); smaller faces are not worth a descriptor.
DEFAULT_MIN_FACE_SIZE = 40.0
MAX_FACE_SIZE = 4096.0


@dataclass(frozen=True)
class RecognitionOptions:
    """The ``[recognition]`` section (module docstring). ``gallery`` None: the state
    directory's (:meth:`gallery_path`); ``threshold`` None: the descriptor model's."""

    enabled: bool = False
    gallery: Path | None = None
    threshold: float | None = None
    views: int = 3
    min_face_size: float = DEFAULT_MIN_FACE_SIZE

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise OptionError("recognition.enabled", self.enabled, "true or false")
        if self.threshold is not None and not (
            is_number(self.threshold) and math.isfinite(self.threshold) and 0.0 < self.threshold < MAX_THRESHOLD
        ):
            raise OptionError(
                "recognition.threshold",
                self.threshold,
                f"a number > 0 and < {MAX_THRESHOLD:g}: a distance between descriptors, the model's own is 0.6",
            )
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))
        if not (isinstance(self.views, int) and not isinstance(self.views, bool) and 1 <= self.views <= MAX_VIEWS):
            raise OptionError("recognition.views", self.views, f"an integer 1-{MAX_VIEWS}")
        if not (is_number(self.min_face_size) and 0 <= self.min_face_size <= MAX_FACE_SIZE):
            raise OptionError(
                "recognition.min_face_size", self.min_face_size, f"a number of pixels from 0 to {MAX_FACE_SIZE:g}"
            )

    def gallery_path(self, state_dir: Path) -> Path:
        """The gallery file: ``gallery`` if set, else ``state_dir``/gallery.json."""
        return self.gallery if self.gallery is not None else Path(state_dir) / GALLERY_FILE_NAME


def recognition_options_from_toml(
    table: dict[str, Any], section: str = "recognition", base_dir: Path | None = None
) -> RecognitionOptions:
    """The raw ``[recognition]`` TOML table -> validated :class:`RecognitionOptions` (absent
    keys take the defaults; a relative ``gallery`` is taken from ``base_dir``); raises
    :class:`OptionError` naming the key."""
    known = [f.name for f in dataclasses.fields(RecognitionOptions)]
    for key in table:
        if key not in known:
            raise OptionError(f"{section}.{key}", key, f"a key of [{section}]: " + ", ".join(known))
    values = dict(table)
    if "gallery" in values:
        gallery = values["gallery"]
        if not isinstance(gallery, str) or not gallery or "\x00" in gallery or not gallery.isprintable():
            raise OptionError(f"{section}.gallery", gallery, "a non-empty path string")
        path = Path(gallery).expanduser()
        values["gallery"] = (base_dir / path) if base_dir is not None else path
    return RecognitionOptions(**values)


RECOGNITION_SECTION = OptionSection(RecognitionOptions, recognition_options_from_toml, with_base_dir=True)
