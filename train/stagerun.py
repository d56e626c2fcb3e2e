"""What a run of several stages keeps on disk, and where it resumes.

The trunk checkpoints in `checkpoints/` as any run does, and always at the end of a stage whose
branch starts there (the branch starts from it, and the next stage reloads it). Each branch has its
folder `branches/STAGE/` with its own `checkpoints/`, its `export/` and `branch.json` once done, so a
run stopped anywhere (mid-stage, mid-branch, at a switch) resumes where it was: a branch in
progress first, else the trunk's newest checkpoint. `stages.json` records the timeline the run
started with; a resume refuses another.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from continua.io import read_json, write_json
from train import checkpoint as ckpt
from train.parallel import Dist
from train.timeline import Segment, Timeline

BRANCHES = "branches"
STAGES_FILE = "stages.json"
BRANCH_DONE = "branch.json"


def branch_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / BRANCHES / stage


def ckpt_home(run_dir: Path, seg: Segment) -> Path:
    """The folder whose checkpoints/ holds this segment's checkpoints: the run's, or its branch's."""
    return branch_dir(run_dir, seg.stage_name) if seg.branch else Path(run_dir)


def branch_done(run_dir: Path, stage: str) -> bool:
    folder = branch_dir(run_dir, stage)
    return (folder / BRANCH_DONE).is_file() and (folder / "export" / "config.json").is_file()


def check_timeline(run_dir: Path, timeline: Timeline, resuming: bool, is_main: bool) -> None:
    """Record the stages a run starts with; a resumed run must find the same ones (steps, switches, branches)."""
    if not timeline.staged:
        return
    path = Path(run_dir) / STAGES_FILE
    now = timeline.to_dict()
    if resuming and path.is_file():
        before = read_json(path)
        if _shape(before) != _shape(now):
            raise ValueError(f"{path}: the recipe's stages changed since this run started (steps, branches, switches "
                             "or blends differ); start over with `train run --no-resume` or set another [train] out")
    elif is_main:
        write_json(path, now)


def _shape(record: dict) -> tuple:
    """The timeline without its folders (a moved run folder still resumes)."""
    segs = [{k: v for k, v in s.items() if k != "shards"} for s in record.get("segments", [])]
    return record.get("stages"), segs


def resume_point(run_dir: Path, timeline: Timeline, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 d: Dist, say: Callable[[str], None]) -> tuple[Path, dict] | None:
    """Load the newest state of the run: a branch in progress (it ran after its trunk's checkpoint), else the
    trunk's newest checkpoint; None when there is none."""
    for st in timeline.stages:
        home = branch_dir(run_dir, st.name)
        if st.branch_steps and not branch_done(run_dir, st.name) and ckpt.latest_checkpoint(home) is not None:
            found = ckpt.resume_newest(home, model, optimizer, d, say)
            if found is not None:
                return found
    return ckpt.resume_newest(run_dir, model, optimizer, d, say)


def reload_trunk(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, d: Dist,
                 say: Callable[[str], None]) -> None:
    """Back to the trunk after a branch: its checkpoint at the stage's end (the newest of the run's)."""
    found = ckpt.resume_newest(run_dir, model, optimizer, d, say)
    if found is None:
        raise ckpt.CheckpointError(f"{ckpt.checkpoints_dir(run_dir)}: no trunk checkpoint to go on from after the "
                                   "branch; run `train run --no-resume` to start over")
    say(f"back on the trunk at {found[0]}")


def continues(timeline: Timeline, at_segment: int, seg: Segment) -> bool:
    """A segment that goes on with the data of the one a checkpoint ended (its stage's branch, same blend)."""
    before = timeline.segments[at_segment]
    return seg.index == at_segment + 1 and (before.stage, before.blend) == (seg.stage, seg.blend)


def keeps_trunk_end(timeline: Timeline, seg: Segment, save_final: bool) -> bool:
    """Whether this segment's last step must be checkpointed: a branch starts from it, or it ends the trunk."""
    if seg.branch:
        return False
    rest = timeline.segments[seg.index + 1:]
    if rest and rest[0].branch and rest[0].stage == seg.stage:
        return True
    return save_final and not any(not g.branch for g in rest)


def ends_branch(timeline: Timeline, seg: Segment, step: int) -> bool:
    """The last step of a stage's branch (a branch may span segments when a switch falls inside it)."""
    return seg.branch and step == seg.last and all(g.stage != seg.stage for g in timeline.segments[seg.index + 1:]
                                                   if g.branch)


def where(timeline: Timeline, segment: int, step: int) -> str:
    """`stage medical (2 of 3), trunk, step 14 (steps 9-16)`: a checkpoint's place, for people."""
    seg = timeline.segments[segment]
    if not timeline.staged:
        return f"step {step} of {seg.last}"
    return (f"stage {seg.stage_name} ({seg.stage + 1} of {len(timeline.stages)}), {seg.kind}"
            f"{f' blend {seg.blend}' if seg.blend else ''}, step {step} (steps {seg.first}-{seg.last})")


def rows_kept(timeline: Timeline, redo: set[int], at_segment: int, start: int) -> Callable[[dict], bool]:
    """Which metrics rows of an interrupted run stay: those of work that will not run again."""
    if not timeline.staged:
        return lambda row: row.get("step", 0) <= start

    def keep(row: dict) -> bool:
        seg = segment_of(timeline, row)
        if seg is None or seg.index not in redo:
            return True
        return seg.index == at_segment and row.get("step", 0) <= start

    return keep


def segment_of(timeline: Timeline, row: dict) -> Segment | None:
    """The segment a metrics row came from (its stage, trunk or branch, and step)."""
    branch = str(row.get("kind", "")).startswith("branch_")
    step = int(row.get("step", 0))
    for seg in timeline.segments:
        if seg.stage_name == row.get("stage") and seg.branch == branch and seg.first - 1 <= step <= seg.last:
            if seg.first - 1 == step and not branch and seg.stage == 0 and step == 0:
                return seg  # the evaluation before any training
            if seg.first - 1 < step or branch:
                return seg
    return None


def write_branch_done(run_dir: Path, seg: Segment, metrics: dict | None) -> None:
    """branch.json, written once the branch's export is complete: what marks it done. `metrics`: its final
    evaluation (None: read back from metrics.jsonl, for a branch exported after a resume at its last step)."""
    if metrics is None:
        from train.gap import read_metrics

        rows = [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if r.get("kind") == "branch_eval"
                and r.get("branch") == seg.stage_name and r.get("step") == seg.last]
        metrics = rows[-1]["metrics"] if rows else {}
    write_json(branch_dir(run_dir, seg.stage_name) / BRANCH_DONE,
               {"stage": seg.stage_name, "last_step": seg.last, "metrics": metrics})
