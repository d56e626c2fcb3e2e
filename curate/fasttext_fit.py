"""fastText's supervised training, run in a fresh process.

fastText's training is not a function of its inputs inside a process that has already done work:
measured with threads = 1 and a fixed seed, the first training in a fresh interpreter gave the same
model every time, while later trainings in the same process gave a different model each time and,
now and then, "Encountered NaN." at every learning rate tried (the suite hit it after `curate score`
had run in the process). The result depends on what the process did before, which is what reading
memory fastText never set looks like. A spawned process starts clean, so a seeded single-thread
training gives the same model wherever it runs.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from continua.exitcodes import RunFailure


def _fit_and_save(kwargs: dict, path: str) -> None:
    import fasttext

    fasttext.train_supervised(**kwargs).save_model(path)


def fit_in_fresh_process(kwargs: dict, path: str | Path) -> None:
    """`fasttext.train_supervised(**kwargs)` in a new spawned process, the model saved to `path`; its
    RuntimeError (such as "Encountered NaN.") is raised here. A script calling it needs the
    `if __name__ == "__main__":` guard, as for any spawned process."""
    try:
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            pool.submit(_fit_and_save, kwargs, str(path)).result()
    except BrokenProcessPool:
        raise RunFailure(f"{kwargs.get('input')}: the fastText training process ended without a result (killed, "
                         f"or out of memory: the model holds bucket x dim floats)") from None
