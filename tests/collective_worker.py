"""One torchrun rank (gloo, CPU) of the collective-failure tests; each rank writes OUT.RANK.json:
{"outcome": "ok" | exception class name, "message": ..., "seconds": ...}.

Scenarios (argv[1]):
  damaged BASE      every rank verifies its own copy of a run's checkpoint (BASE/rank_R): rank 1's copy has
                    a damaged checksums.json, as a rank on a node with a stale or broken view would see
  raises BASE       at resume, rank 1 meets an unexpected error while checking its share of the files
  shared BASE       rank R's run folder is BASE/rank_R (node-local disks): the shared-folder probe refuses it
  shared_ok BASE    every rank's run folder is BASE/same: the probe passes and leaves nothing behind
  agree BASE        rank 1 fails work that only it does; every rank hears
  timeout BASE      after training_started with step_timeout_s = 3, rank 1 never joins a barrier
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(scenario: str, base: str, out: str) -> None:
    from train.config import ParallelConfig
    from train.parallel import check_shared_folder, init_distributed, shutdown, training_started

    pc = ParallelConfig(init_timeout_s=60, step_timeout_s=3)
    d = init_distributed("cpu", pc)
    root = Path(base)
    t0, result = time.perf_counter(), {"outcome": "ok", "message": ""}
    try:
        if scenario in ("damaged", "raises"):
            from continua import checksums
            from train import checkpoint as ckpt

            if scenario == "raises" and d.rank == 1:
                def broken(folder, files, names=None):
                    raise RuntimeError("the storage went away")

                checksums.verify = broken
            run = root / f"rank_{d.rank}"
            if scenario == "damaged":  # as for [train] optimizer_from: the run must stop, on every rank
                ckpt.verify_checkpoint(run / "checkpoints" / "step_0000002", d)
            else:  # as at resume: every rank skips the checkpoint, none waits for the others
                found = ckpt.newest_valid_checkpoint(run, d, lambda m: None)
                result["message"] = str(found and found.relative_to(run))
        elif scenario == "shared":
            check_shared_folder(root / f"rank_{d.rank}", d)
        elif scenario == "shared_ok":
            check_shared_folder(root / "same", d)
        elif scenario == "agree":
            def work() -> int:
                if d.rank == 1:
                    raise OSError(28, "No space left on device", str(root / "x"))
                return 7

            result["message"] = str(d.agree(work, "writing x"))
        elif scenario == "timeout":
            training_started(d, pc)
            if d.rank == 1:
                time.sleep(15)
            else:
                d.barrier()
    except Exception as e:  # noqa: BLE001 - the test reads what each rank raised
        result = {"outcome": type(e).__name__, "message": str(e)}
    result["seconds"] = time.perf_counter() - t0
    Path(f"{out}.{d.rank}.json").write_text(json.dumps(result))
    if scenario != "timeout":
        shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
