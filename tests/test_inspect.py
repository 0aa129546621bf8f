"""`seglab inspect`, run as users run it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.exports import striped, to_rgb, write_cvat


def inspect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "seglab.cli", "inspect", *args], capture_output=True, text=True
    )


def test_inspect_reports_classes_splits_and_pixel_shares(tmp_path: Path):
    root = write_cvat(
        tmp_path / "e", {"Train": {"a": striped(6, 5)}, "Validation": {"b": striped(2, 5)}}
    )
    result = inspect(str(root), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["layout"] == "cvat"
    assert summary["classes"][2] == {"index": 2, "name": "blood vessel", "color": [51, 221, 255]}
    assert summary["splits"]["train"] == {
        "images": 1,
        "pixels": {"background": 10, "tool": 10, "blood vessel": 10},
        "missing_classes": [],
        "channels": {"3": 1},  # channel count -> images
        "outline_share": 1.0,  # stripes 2 px wide: every pixel is within 2 px of another class
    }
    assert summary["splits"]["val"]["missing_classes"] == ["blood vessel"]
    assert summary["suggested_class_weights"] == {
        "background": 1.0,
        "tool": 1.0,
        "blood vessel": 1.0,
    }
    assert summary["problems"] == []

    text = inspect(str(root))
    assert "Layout:  cvat" in text.stdout and "val has no pixels of: blood vessel" in text.stdout
    rows = [line.split() for line in text.stdout.splitlines()]
    assert ["outline", "%", "100.00", "100.00"] in rows


def test_inspect_exits_nonzero_and_lists_problems(tmp_path: Path):
    root = write_cvat(tmp_path / "e", {"train": {"a": striped()}, "val": {"b": striped()}})
    rgb = to_rgb(striped())
    rgb[0, 0] = (7, 7, 7)
    Image.fromarray(rgb).save(root / "SegmentationClass" / "a.png")
    result = inspect(str(root), "--json")
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)["problems"]
    assert "(7, 7, 7) (1 px) in 1 mask(s)" in problem and "a.png" in problem

    ignored = inspect(str(root), "unknown_colors=ignore", "--json")
    assert ignored.returncode == 0
    assert json.loads(ignored.stdout)["unknown_values"] == [
        {"value": [7, 7, 7], "pixels": 1, "files": 1}
    ]

    (root / "labelmap.txt").unlink()
    unreadable = inspect(str(root))
    assert unreadable.returncode == 2 and "labelmap" in unreadable.stderr


def test_an_export_without_images_is_still_counted(tmp_path: Path):
    """Teams often export annotations only: the masks are counted, the missing images said."""
    import numpy as np

    from seglab.data.cvat_writer import CvatWriter
    from seglab.data.labelmap import SegClass

    classes = [SegClass("background", (0, 0, 0)), SegClass("leaf", (51, 221, 255))]
    with CvatWriter(tmp_path / "annotations.zip", classes) as writer:
        for i in range(4):
            mask = np.zeros((10, 20), np.uint8)
            mask[:, : 5 * (i + 1)] = 1  # leaf: 50, 100, 150, 200 of 200 px
            writer.add(f"frame{i}", mask)
    result = inspect(str(tmp_path / "annotations.zip"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["has_images"] is False
    pixels = [summary["splits"][s]["pixels"] for s in summary["splits"]]
    assert sum(p["leaf"] for p in pixels) == 500 and sum(p["background"] for p in pixels) == 300
    assert any("made without images" in note for note in summary["notes"])
    text = inspect(str(tmp_path / "annotations.zip")).stdout
    assert text.rstrip().endswith("Masks OK; training also needs the images (see the note above).")


def readme_console_session() -> list[tuple[str, str]]:
    """The README's ```console block: each `$ command` with the output printed under it."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```console\n(.*?)```", readme, flags=re.S)
    session: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            session.append((line[2:], ""))
        else:
            command, output = session[-1]
            session[-1] = (command, output + line + "\n")
    return session


def test_the_readme_inspect_session_prints_what_the_readme_shows(tmp_path: Path):
    """Run as printed (in a temporary folder instead of /tmp/demo): same output, line by line."""
    session = readme_console_session()
    assert [shlex.split(command)[:2] for command, _ in session] == [
        ["seglab", "demo"],
        ["seglab", "inspect"],
    ]
    for command, expected in session:
        args = [arg.replace("/tmp/demo", str(tmp_path / "demo")) for arg in shlex.split(command)]
        result = subprocess.run(
            [sys.executable, "-m", "seglab.cli", *args[1:]], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        printed = result.stdout.replace(str(tmp_path / "demo"), "/tmp/demo")
        assert printed.rstrip().splitlines() == expected.rstrip().splitlines()
