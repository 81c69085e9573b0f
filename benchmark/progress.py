"""Progress for steps that are not epochs of a training loop: a bar over named stages (evaluation: clean,
PGD, AutoAttack, sharpness; the arms and repeats of a benchmark), so that no long phase runs silently."""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


class Stages:
    """A tqdm bar with one step per stage; :meth:`start` names the stage now running (shown on the bar) and
    counts the previous one as done. Use as a context manager; a disabled bar prints nothing."""

    def __init__(self, desc: str, stages: Iterable[str] | int, enabled: bool = True) -> None:
        total = stages if isinstance(stages, int) else len(list(stages))
        self.bar = tqdm(total=total, desc=desc, disable=not enabled, leave=False)
        self.running = False

    def start(self, name: str) -> None:
        if self.running:
            self.bar.update(1)
        self.running = True
        self.bar.set_postfix_str(name, refresh=True)

    def close(self) -> None:
        if self.running:
            self.bar.update(1)
            self.running = False
        self.bar.close()

    def __enter__(self) -> Stages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
