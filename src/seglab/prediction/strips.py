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

import torch


class SlideAccumulator:
    """Blends one image's tile logits into strips of final logits, top to bottom.

    `add` takes the tiles in `tile_starts` order (row of tiles by row of tiles) and returns the
    strips that became final; `finish` returns the rest. Strips are `(top, logits)` with logits
    (C, rows, width) float32 at the image's own width. The caller may reuse image rows above a
    returned strip's end: no later tile reads them.
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

    def add(self, top: int, left: int, logits: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """Add one tile's (C, tile_h, tile_w) logits; returns the strips this made final."""
        if top < self._top:
            raise ValueError(f"tile at row {top} after row {self._top}: give tiles top-down")
        done = []
        if top > self._top:  # rows above `top`: no tile still to come touches them
            done.append(self._emit(top - self._top))
        if self._sums is None:
            self._sums = logits.new_zeros((logits.shape[0], self._rows, self._cols))
        row = top - self._top
        self._sums[:, row : row + self.tile_h, left : left + self.tile_w] += logits * self.window
        self._weights[:, row : row + self.tile_h, left : left + self.tile_w] += self.window
        return done

    def finish(self) -> tuple[int, torch.Tensor]:
        """The last strip: every row not yet returned."""
        if self._sums is None:
            raise ValueError("no tile was added")
        return self._emit(self.height - self._top)

    def _emit(self, count: int) -> tuple[int, torch.Tensor]:
        """The first `count` buffered rows as final logits; the buffer moves down by as many."""
        assert self._sums is not None
        top = self._top
        strip = (self._sums[:, :count] / self._weights[:, :count])[:, :, : self.width]
        if count < self._rows:
            self._sums[:, : self._rows - count] = self._sums[:, count:].clone()
            self._weights[:, : self._rows - count] = self._weights[:, count:].clone()
        self._sums[:, self._rows - count :] = 0
        self._weights[:, self._rows - count :] = 0
        self._top += count
        return top, strip
