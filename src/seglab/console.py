"""How seglab talks to the user: notes as `[seglab] ...` on stdout (once per DDP job), and
errors the user can fix as one `error: ...` line on stderr."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lightning_utilities.core.rank_zero import rank_zero_only

from seglab.errors import UserError

# Lightning's own `rank_zero_only` is this function, and it sets the rank attribute when it is
# imported; prediction never imports Lightning (it would cost ~250 MiB of a huge image's memory
# budget), so the rank is set here from the same variables, which Lightning then keeps.
if not hasattr(rank_zero_only, "rank"):
    _RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")
    rank_zero_only.rank = next(
        (int(os.environ[key]) for key in _RANK_VARIABLES if os.environ.get(key)), 0
    )


@rank_zero_only
def say(message: str) -> None:
    """Print a note the user should read; the prefix tells seglab's lines from the libraries'."""
    print(f"[seglab] {message}")


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Turn a UserError into one line on stderr and exit status 2, instead of a traceback.

    Bugs still show their traceback; `HYDRA_FULL_ERROR=1` shows it for user errors too.
    """
    try:
        yield
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
