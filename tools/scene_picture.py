"""Draw the README's scene picture: a real photo with a mask and a zone, the faces the scene
keeps (green) and drops (gray), and the zone's face count.

    python -m tools.scene_picture [--out docs/images/scene-example.jpg] [--model PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.detect.detector import FaceDetector
from edge.detect.preprocess import resize_bilinear
from edge.scene.rules import SceneOptions, draw_scene, make_polygon, make_zone
from edge.sources.imageio import ImageError, encode_jpeg, load_image
from tools.shared_data import DEFAULT_INT8_MODEL, PROJECT_ROOT, upstream_dir

DEFAULT_OUT = PROJECT_ROOT / "docs" / "images" / "scene-example.jpg"
PHOTO = "3.jpg"  # a hallway: a door on the left, a notice on the wall, five faces
SIZE = (640, 480)
MAX_BYTES = 100_000
# The same shapes as an [scene] section would give them (see examples/edge-face.toml).
EXAMPLE = SceneOptions(
    masks=(make_polygon([[0.66, 0.03], [0.87, 0.03], [0.87, 0.56], [0.66, 0.56]], "mask"),),
    zones=(make_zone("door", [[0.02, 0.08], [0.37, 0.08], [0.37, 0.97], [0.02, 0.97]], "door"),),
    min_face_size=20,
)


def draw_example(images_dir: Path, model: Path) -> bytes:
    """The picture as JPEG bytes (quality lowered until it fits :data:`MAX_BYTES`)."""
    frame = resize_bilinear(load_image(images_dir / PHOTO), *SIZE)
    detections = FaceDetector(model).detect(frame)
    drawn = draw_scene(frame, EXAMPLE, detections)
    for quality in (85, 75, 65, 55):
        jpeg = encode_jpeg(drawn, quality)
        if len(jpeg) <= MAX_BYTES:
            return jpeg
    raise SystemExit(f"scene_picture: cannot fit the picture into {MAX_BYTES} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--model", type=Path, default=DEFAULT_INT8_MODEL)
    args = parser.parse_args(argv)
    try:
        jpeg = draw_example(upstream_dir() / "images", args.model)
    except ImageError as exc:
        print(f"scene_picture: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_bytes(jpeg)
    partial.replace(args.out)  # never a half-written picture at the final path
    print(f"{args.out}: {len(jpeg)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
