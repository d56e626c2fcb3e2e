"""Submit a stage chain to Slurm with datatrove's SlurmPipelineExecutor, or write it without submitting.

Each stage becomes one job array whose script datatrove writes (`#SBATCH` directives, then
`srun launch_pickled_pipeline <logging_dir>/executor.pik`); a stage depends on the one before with
`--dependency=afterok:<job id>`, so dedup waits for scoring and the finish job (dup marks and
stats.json) for everything. Workers on other nodes read the pickled pipeline and write their
outputs under the same paths, so those folders must be on a filesystem every node mounts.

`--dry-run` routes datatrove's own sbatch call to a writer: the scripts land in a folder with a
`submit.sh` that submits them in the same order with the same dependencies.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from continua.io import atomic_open, write_json
from continua.recipe import Recipe
from curate.executors import Stage, Submission, make_executor, write_submit_script

LOCAL_FS = {"tmpfs", "ramfs", "devtmpfs", "overlay"}


class SharedFolderError(OSError):
    """A folder Slurm jobs must write to cannot be written from here."""


def fs_type(path: Path) -> str:
    """Filesystem type of the mount holding `path` (from /proc/mounts; "" when unknown)."""
    path = Path(path).resolve()
    best, kind = "", ""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (str(path) + "/").startswith(parts[1].rstrip("/") + "/") and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        return ""
    return kind


def check_shared(folders: list[Path], warn: Callable[[str], None]) -> None:
    """Each folder must be writable (clear error otherwise); node-local filesystems get a warning,
    since a compute node would write to its own copy and the next stage would not see the outputs."""
    for folder in folders:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-test-{socket.gethostname()}-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SharedFolderError(f"{folder}: not writable ({e.strerror or e}); Slurm jobs write their outputs and "
                                    f"logs here: use a folder on a shared filesystem every node can write "
                                    f"([curate] out or [run] out_dir)") from e
        kind = fs_type(folder)
        if kind in LOCAL_FS or str(folder.resolve()).startswith(("/tmp/", "/var/tmp/", "/dev/shm/")):
            warn(f"{folder} is on a node-local filesystem ({kind or 'temporary folder'}): Slurm jobs on other nodes "
                 f"will not see it; use a shared filesystem")


@contextmanager
def _recording(dry_run: Path | None) -> Iterator[list[Submission]]:
    """Route datatrove's `launch_slurm_job` through a recorder; with `dry_run`, write instead of submitting."""
    import datatrove.executor.slurm as dt_slurm

    original = dt_slurm.launch_slurm_job
    subs: list[Submission] = []
    tag = uuid.uuid4().hex[:6]

    def launch(contents: str, job_id_retriever, *args: str) -> str:
        name = next((ln.split("=", 1)[1] for ln in contents.splitlines() if ln.startswith("#SBATCH --job-name=")), "job")
        lines = contents.splitlines(keepends=True)
        if "\nmerge_stats " in contents:  # datatrove's stats merge after each stage needs no GPU
            name += "-merge_stats"
            lines = [ln for ln in lines if not ln.startswith("#SBATCH --gpus=")]
        if dry_run is None:
            job_id = original("".join(lines), job_id_retriever, *args)
            script = ""
        else:
            # a dependency datatrove wrote into the script moves to the command line, where submit.sh
            # replaces the stand-in job id with the one sbatch printed
            args = args + tuple(f"--{ln[len('#SBATCH --'):].strip()}" for ln in lines
                                if ln.startswith("#SBATCH --dependency="))
            lines = [ln for ln in lines if not ln.startswith("#SBATCH --dependency=")]
            job_id = f"DRYRUN{tag}x{len(subs):03d}"
            script = f"{len(subs):02d}-{name}.sbatch"
            with atomic_open(dry_run / script) as f:
                f.write("".join(lines))
        subs.append(Submission(name, str(job_id), script, list(args)))
        return job_id

    dt_slurm.launch_slurm_job = launch
    try:
        yield subs
    finally:
        dt_slurm.launch_slurm_job = original


JOBS_FILE = "slurm_jobs.json"  # ids of the last submission, so a re-run never submits the same tasks twice


def check_not_queued(folder: Path) -> None:
    """Refuse to submit again while jobs of the previous submission for this folder are queued or running."""
    from continua.io import read_json
    from continua.lock import LockHeld

    jobs_file = Path(folder) / JOBS_FILE
    if not jobs_file.exists():
        return
    ids = [j for j in read_json(jobs_file).get("job_ids", []) if j]
    if not ids:
        return
    if shutil.which("squeue") is None:
        raise LockHeld(f"{jobs_file} lists Slurm jobs {', '.join(ids)} and `squeue` is not on PATH to check them: "
                       f"run from a Slurm login node, or delete {jobs_file} once those jobs are gone")
    out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True)
    live = sorted({ln.split("_")[0] for ln in out.stdout.split()})
    if live:
        raise LockHeld(f"{folder}: Slurm jobs {', '.join(live)} of the previous `curate score` are still queued or "
                       f"running; wait for them (squeue -j {','.join(live)}) or cancel them (scancel) first")


def submit_chain(recipe: Recipe, stages: list[Stage], job_prefix: str, dry_run: Path | None,
                 warn: Callable[[str], None] = lambda m: print(f"warning: {m}", file=sys.stderr)) -> list[Submission]:
    """Submit `stages` as dependent job arrays (stages already complete are skipped by datatrove)."""
    if dry_run is None and shutil.which("sbatch") is None:
        raise SharedFolderError("[curate] executor = \"slurm\": no `sbatch` on PATH here; run on a Slurm login "
                                "node, or add --dry-run to write the scripts without submitting")
    check_shared([s.logging_dir for s in stages], warn)
    if dry_run is None:
        check_not_queued(stages[0].logging_dir.parent)
    if dry_run is not None:
        check_shared([dry_run], lambda m: None)
    chain = None
    for stage in stages:
        chain = make_executor(recipe, stage, f"{job_prefix}-{stage.name}", depends=chain)
    with _recording(dry_run) as subs:
        chain.run()  # launches the dependencies first, then itself
    if dry_run is not None:
        write_submit_script(dry_run / "submit.sh", subs)
    else:
        write_json(stages[0].logging_dir.parent / JOBS_FILE, {"job_ids": [s.job_id for s in subs]})
    return subs
