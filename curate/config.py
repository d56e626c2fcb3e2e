"""The [curate] recipe section: which scorers run and how the work is executed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from continua.schema import at_least, path_field


def recipe_sections() -> dict[str, type]:
    """This stage's recipe section (pyproject.toml's continua.recipe_sections entry points)."""
    return {"curate": CurateConfig}


@dataclass
class SlurmOptions:
    """Arguments for datatrove's SlurmPipelineExecutor ([curate.slurm])."""

    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    job_name: str = "curate"
    sbatch_args: dict[str, str] = field(default_factory=dict)
    venv_path: str | None = None
    env_command: str | None = None  # shell line run before the job's python (e.g. "module load cuda; source env/bin/activate")
    max_array_launch_parallel: bool = False


@dataclass
class RayOptions:
    """Arguments for datatrove's RayPipelineExecutor ([curate.ray])."""

    address: str | None = None  # Ray cluster to join ("ray://host:10001", "auto"); else RAY_ADDRESS; else a local one
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    nodes_per_task: int = 1
    tasks_per_job: int = 1
    timeout: int | None = None


@dataclass
class MinhashOptions:
    """datatrove MinhashConfig for near-duplicate marking ([curate.minhash])."""

    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1


@dataclass
class CurateConfig:
    # fastText quality classifiers: column name -> model file (column becomes fasttext_<name>)
    classifiers: dict[str, Path] = field(default_factory=dict, metadata={"path": True, "must_exist": False})
    # datatrove heuristic signal groups to add as columns
    heuristics: list[Literal["gopher_quality", "gopher_repetition", "c4", "fineweb"]] = field(
        default_factory=lambda: ["gopher_quality", "gopher_repetition"])
    # word splitter of the heuristics: "regex" (built in, fast) or "spacy" (datatrove's spaCy
    # tokenizer, spacy.blank("en"): pip install 'continua[spacy]', no model download)
    word_tokenizer: Literal["regex", "spacy"] = "regex"
    # reference n-gram perplexity (Guo et al.): name -> model from `curate train-reference`, or a
    # KenLM .arpa / .binary file (texts split by the built-in word tokenizer);
    # column ppl_ngram_<name>, lower = closer to the reference corpus
    ngram_references: dict[str, Path] = field(default_factory=dict, metadata={"path": True, "must_exist": False})
    # causal-LM perplexity (Ankner et al.): name -> local Hugging Face model folder; column ppl_lm_<name>
    lm_scorers: dict[str, Path] = field(default_factory=dict, metadata={"path": True, "must_exist": False})
    lm_batch_tokens: int = 16384  # padded tokens per forward pass (memory ~ this x vocabulary x 4 bytes)
    lm_max_length: int = 1024  # documents are truncated to their first lm_max_length tokens
    lm_device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda", "cuda:1", ...
    lm_allow_pickle: bool = False  # accept pickled .bin weights (read weights-only); safetensors otherwise
    # CCNet buckets: score column -> two percentiles, e.g. ppl_ngram_med = [30, 60] gives
    # bucket_ppl_ngram_med = head (best 30%) / middle / tail over the whole table
    buckets: dict[str, list[float]] = field(default_factory=dict)
    # label of the classifiers' positive class (fastText `__label__<positive_label>`)
    positive_label: str = "hq"
    # documents per batch for token counting and fastText prediction
    batch_size: int = 256
    # duplicate marking after scoring: exact (text_hash) and/or MinHash near-duplicates
    dedup: list[Literal["exact", "minhash"]] = field(default_factory=list)
    minhash: MinhashOptions = field(default_factory=MinhashOptions)
    executor: Literal["local", "slurm", "ray"] = "local"
    # GPUs per score task on Slurm/Ray; unset = 1 when an lm_scorer runs off the CPU, else 0
    gpus_per_task: int | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    ray: RayOptions = field(default_factory=RayOptions)
    tasks: int = 0  # datatrove tasks per source; 0 = auto (curate.cores): one per available core when local, else 1
    workers: int = 0  # tasks run at once; 0 = auto: min(tasks, available cores)
    out: Path | None = path_field(None, must_exist=False)  # default: <run.out_dir>/curate

    def validate(self) -> None:
        at_least("tasks", self.tasks, 0, " (0 = one per available core)")
        at_least("workers", self.workers, 0, " (0 = one per available core)")
        at_least("batch_size", self.batch_size, 1)
        if self.gpus_per_task is not None:
            at_least("gpus_per_task", self.gpus_per_task, 0)
