"""Real text that every install already has: the Python packages it just put on the machine.

The embedded demo is a "CPT into code" experiment that needs no download and no user data:
- general English = docstrings and documentation of the installed packages (README-style
  package descriptions, .md/.rst/.txt files, module/class/function docstrings);
- domain = the Python source of those packages;
- reference = the Python standard library's source, high-quality code curated by CPython's core
  developers: the positive examples of the demo's quality classifier (DCLM/Guo et al. style:
  quality = closeness to a trusted reference).
Files are visited in a hash order so each corpus samples many packages, deterministically for a
given install, and every corpus is capped in characters to keep the demo within minutes. Only the
packages continua's own base install brings (its requirements, followed recursively) are read: what
else happens to be installed (the test extras, a notebook) changes neither the corpora nor the
demo's time and numbers; only those packages' versions do.
"""

from __future__ import annotations

import email.parser
import hashlib
import inspect
import json
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from continua.io import atomic_open

MIN_DOC_CHARS = 300
MAX_DOC_CHARS = 12_000


@dataclass
class CorpusCaps:
    general_chars: int = 2_500_000
    code_chars: int = 1_000_000
    reference_chars: int = 1_500_000
    per_package_fraction: float = 0.08  # no package may fill more than this share of a corpus


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def base_install_packages(dist: str = "continua") -> set[str] | None:
    """Top-level import names of `dist`'s base requirements, recursively (extras left out), normalized as
    `_package_of` names them; None when `dist` is not installed (then nothing is filtered)."""
    import importlib.metadata as md

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        return None
    seen, todo = set(), [dist]
    while todo:
        name = todo.pop()
        if _norm(name) in seen:
            continue
        seen.add(_norm(name))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for line in requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    tops: set[str] = set()
    for top, dists in md.packages_distributions().items():
        if any(_norm(d) in seen for d in dists):
            tops.add(_norm(top))
    tops |= seen  # dist-info folders are named by distribution
    return tops


def _order(path: Path) -> str:
    return hashlib.sha1(str(path).encode()).hexdigest()


def _package_of(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts
    first = parts[0] if len(parts) > 1 else Path(parts[0]).stem  # a module at the top: six.py -> six
    return _norm(first.split("-")[0])



def _split(text: str, limit: int = MAX_DOC_CHARS) -> list[str]:
    """Cut long texts at blank lines into pieces of at most `limit` characters."""
    if len(text) <= limit:
        return [text]
    pieces, current = [], []
    size = 0
    for block in text.split("\n\n"):
        if size + len(block) > limit and current:
            pieces.append("\n\n".join(current))
            current, size = [], 0
        current.append(block[:limit])
        size += len(block) + 2
    if current:
        pieces.append("\n\n".join(current))
    return pieces


_DOCSTRING = re.compile(
    r'(?:\A\s*|^[ \t]*(?:async[ \t]+)?(?:def|class)[^\n]*\n[ \t]*)[rRuU]?("""|\'\'\')(.*?)\1', re.S | re.M)


def _docstrings(source: str) -> str:
    """Module, class and function docstrings (a regex: ast.parse of thousands of files is too slow here)."""
    found = []
    for match in _DOCSTRING.finditer(source):
        doc = inspect.cleandoc(match.group(2))
        if len(doc) >= 80:
            found.append(doc)
    return "\n\n".join(found)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _metadata_description(path: Path) -> str:
    text = _read(path)
    if not text:
        return ""
    msg = email.parser.Parser().parsestr(text)
    body = msg.get_payload()
    return body if isinstance(body, str) else ""


def _python_files(root: Path) -> list[Path]:
    skip = {"__pycache__", "tests", "test", "site-packages", "idlelib", "lib2to3"}
    files = [p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts) and p.is_file()]
    return sorted(files, key=_order)


def _capped(docs: Iterator[tuple[str, str]], cap: int, per_package: float) -> Iterator[tuple[str, str]]:
    """Yield (package, text) until `cap` characters, with at most `per_package` of them from one package."""
    total, by_pkg = 0, {}
    limit = max(1, int(cap * per_package))
    for pkg, text in docs:
        if total >= cap:
            return
        if by_pkg.get(pkg, 0) + len(text) > limit:
            continue
        by_pkg[pkg] = by_pkg.get(pkg, 0) + len(text)
        total += len(text)
        yield pkg, text


def general_documents(site: Path, packages: set[str] | None = None) -> Iterator[tuple[str, str]]:
    """Package descriptions, documentation files and docstrings of installed packages (of `packages` only)."""
    def wanted(p: Path) -> bool:
        return packages is None or _package_of(p, site) in packages

    for meta in sorted(site.glob("*.dist-info/METADATA"), key=_order):
        if not wanted(meta.parent):
            continue
        desc = _metadata_description(meta)
        for piece in _split(desc):
            if len(piece) >= MIN_DOC_CHARS:
                yield _package_of(meta.parent, site), piece
    docs = [p for p in site.rglob("*") if p.suffix in (".md", ".rst", ".txt") and p.is_file()
            and not p.name.upper().startswith(("LICENSE", "COPYING", "NOTICE", "AUTHORS", "RECORD", "TOP_LEVEL"))
            and "dist-info" not in str(p) and wanted(p)]
    for p in sorted(docs, key=_order):
        text = _read(p)
        for piece in _split(text or ""):
            if len(piece) >= MIN_DOC_CHARS:
                yield _package_of(p, site), piece
    for p in _python_files(site):
        text = _read(p) if wanted(p) else None
        if not text:
            continue
        for piece in _split(_docstrings(text)):
            if len(piece) >= MIN_DOC_CHARS:
                yield _package_of(p, site), piece


def code_documents(root: Path, packages: set[str] | None = None) -> Iterator[tuple[str, str]]:
    """Python source files (long ones cut at blank lines), of `packages` only when given."""
    for p in _python_files(root):
        if packages is not None and _package_of(p, root) not in packages:
            continue
        if p.stat().st_size > 400_000:  # generated tables, vendored blobs
            continue
        text = _read(p)
        for piece in _split(text or ""):
            if len(piece) >= MIN_DOC_CHARS:
                yield _package_of(p, root), piece


def _write(path: Path, docs: Iterator[tuple[str, str]], prefix: str) -> dict:
    n, chars = 0, 0
    with atomic_open(path) as f:
        for i, (pkg, text) in enumerate(docs):
            f.write(json.dumps({"id": f"{prefix}-{i}", "package": pkg, "text": text}, ensure_ascii=False) + "\n")
            n += 1
            chars += len(text)
    return {"path": str(path), "documents": n, "characters": chars}


def build_demo_corpora(out: Path, caps: CorpusCaps | None = None, site: Path | None = None,
                       stdlib: Path | None = None, packages: set[str] | None | str = "base") -> dict[str, dict]:
    """Write general.jsonl, code.jsonl and stdlib.jsonl under `out`; return their sizes. `packages`: the
    top-level names read from `site` ("base": those of continua's base install; None: all)."""
    caps = caps or CorpusCaps()
    site = Path(site or sysconfig.get_paths()["purelib"])
    stdlib = Path(stdlib or sysconfig.get_paths()["stdlib"])
    if packages == "base":
        packages = base_install_packages()
    out.mkdir(parents=True, exist_ok=True)
    stats = {
        "general": _write(out / "general.jsonl", _capped(general_documents(site, packages),
                                                         caps.general_chars, caps.per_package_fraction), "gen"),
        "code": _write(out / "code.jsonl", _capped(code_documents(site, packages),
                                                   caps.code_chars, caps.per_package_fraction), "code"),
        "stdlib": _write(out / "stdlib.jsonl",
                         _capped(code_documents(stdlib), caps.reference_chars, 0.2), "std"),
    }
    for name, s in stats.items():
        if s["documents"] == 0:
            raise RuntimeError(f"demo corpus '{name}' is empty: no suitable files under {site} / {stdlib}")
    return stats


def train_demo_tokenizer(texts: Iterator[str], out_dir: Path, vocab_size: int = 8192) -> Path:
    """A byte-level BPE for the demo's tiny base model, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / "tokenizer.json") as f:
        f.write(tok.to_str())
    with atomic_open(out_dir / "tokenizer_config.json") as f:
        json.dump({"eos_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False,
                   "model_max_length": 2048, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)
    return out_dir
