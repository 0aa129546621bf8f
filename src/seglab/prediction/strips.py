"""`slide` mode's blending, strip by strip: the one definition of how tile logits become image
logits, for images of any size, in memory bounded by a tile's height.

Tiles are visited row of tiles by row of tiles (`tile_starts` tops, ascending). Once a tile at a
new top arrives, no later tile touches the rows above that top, so they are final: their blended
logits (sum of `logits * window` over sum of `window`) leave as a strip and the buffer moves
down. The buffer holds `num_classes x tile_height x width` float32 sums and `tile_height x width`
weights whatever the image's height: a 20000x20000 image with 4 classes and 512 px tiles keeps
~200 MB, where whole-image float logits would take 6.4 GB.

Every pixel's sum is accumulated in the same tile order, with the same operations, as a
whole-image buffer would; the strips are bit for bit the whole-image result (tests/test_predict.py
checks this against that whole-image algorithm).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

CHUNK_PIXELS = 1 << 20  # pixels per strip handed out: bounds the temporaries made from one


class SlideAccumulator:
    """Blends one image's tile logits into strips of final logits, top to bottom.

    For each tile, in `tile_starts` order (row of tiles by row of tiles): first `advance(top)`,
    which yields the strips that no tile from `top` on touches, then `add`. Strips are
    `(top, logits)`, logits (C, rows, width) float32 at the image's own width, each of at most
    ~`CHUNK_PIXELS` pixels, computed only when asked for (so that the caller's temporaries,
    argmax and colours, stay that small too); `finish` yields the rest. The caller may reuse
    image rows above a strip it was given: no later tile reads them.
    """

    def __init__(self, height: int, width: int, window: torch.Tensor):
        self.height, self.width = height, width
        self.window = window
        self.tile_h, self.tile_w = window.shape
        # An image smaller than a tile is covered by one tile padded up to it, cropped back.
        self._rows, self._cols = self.tile_h, max(width, self.tile_w)
        self._top = 0  # the image row of the buffer's first row
        self._sums: torch.Tensor | None = None  # (C, rows, cols), made by the first tile
        self._weights = torch.zeros((1, self._rows, self._cols), device=window.device)

    def advance(self, top: int) -> Iterator[tuple[int, torch.Tensor]]:
        """The rows above `top`, final once tiles start there; the buffer then moves down."""
        if top < self._top:
            raise ValueError(f"tile at row {top} after row {self._top}: give tiles top-down")
        if top > self._top:
            yield from self._emit(top - self._top)

    def add(self, top: int, left: int, logits: torch.Tensor) -> None:
        """One tile's (C, tile_h, tile_w) logits, at the top `advance` was last given."""
        if top != self._top:
            raise ValueError(f"tile at row {top}: call advance({top}) first")
        if self._sums is None:
            self._sums = logits.new_zeros((logits.shape[0], self._rows, self._cols))
        window, h, w = self.window, self.tile_h, self.tile_w
        self._sums[:, :h, left : left + w] += logits * window
        self._weights[:, :h, left : left + w] += window

    def finish(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Every row not yet handed out."""
        if self._sums is None:
            raise ValueError("no tile was added")
        yield from self._emit(self.height - self._top)

    def _emit(self, count: int) -> Iterator[tuple[int, torch.Tensor]]:
        """The first `count` buffered rows as final logits, a chunk at a time; then the buffer
        moves down by as many rows, copied in pieces that do not overlap (no full-buffer
        temporary)."""
        assert self._sums is not None
        sums, weights, rows = self._sums, self._weights, self._rows
        step = max(1, CHUNK_PIXELS // self._cols)
        for start in range(0, count, step):
            stop = min(count, start + step)
            strip = sums[:, start:stop] / weights[:, start:stop]
            yield self._top + start, strip[:, :, : self.width]
        for start in range(0, rows - count, count):
            stop = min(rows - count, start + count)
            sums[:, start:stop] = sums[:, start + count : stop + count]
            weights[:, start:stop] = weights[:, start + count : stop + count]
        sums[:, rows - count :] = 0
        weights[:, rows - count :] = 0
        self._top += count
