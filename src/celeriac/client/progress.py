"""A live progress bar for a batch of futures (tqdm: a terminal or a notebook)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celeriac.client.futures import FINISHED, Future, SupportsFuture, as_completed


def progress(
    futures: Iterable[Future[Any] | SupportsFuture[Any]],
    *,
    description: str = "tasks",
    timeout: float | None = None,
    **tqdm_options: Any,
) -> None:
    """Show a progress bar until every future (or AsyncResult) is done, then return.

    Failed tasks count as done and are tallied in the bar's postfix; their
    errors are raised later by ``result()``, as usual.  ``tqdm.auto`` picks a
    notebook widget under Jupyter and a text bar in a terminal.
    """
    from tqdm.auto import tqdm

    items = [_as_future(f) for f in futures]
    failed = 0
    with tqdm(total=len(items), desc=description, unit="task", **tqdm_options) as bar:
        for future in as_completed(items, timeout=timeout):
            if future.status != FINISHED:
                failed += 1
                bar.set_postfix(failed=failed)
            bar.update(1)


def _as_future(item: Future[Any] | SupportsFuture[Any]) -> Future[Any]:
    return item if isinstance(item, Future) else item.as_future()
