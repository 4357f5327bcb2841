"""`python -m src.verify [REV]`: are these results the code's? For an instructor who receives a
repo or a pushed experiment.

Three checks, one line for each failure (naming the file), exit 1 when any fails:
1. every output and dependency equals what `dvc.lock` records (`dvc status`: an edited metric,
   a swapped model, code changed since the run);
2. the params `dvc.lock` records equal `params.yaml` (a value changed without a rerun);
3. the test accuracy recomputed from `models/best.pt` on the test split, with the evaluate
   stage's own function and params, equals `metrics/eval.json` — to the last digit on the CPU
   kernel level the run recorded (`metrics/train.json` cpu_capability: evaluation is fp32 and
   deterministic there), within TOLERANCE on another, or for a run on a GPU (`device`; AVX2
   against AVX-512 or CUDA sums in another order).

REV (a commit, branch, tag or `dvc exp` name, e.g. after `dvc exp pull origin <name>`) is checked
out into a temporary git worktree that shares this repo's DVC cache; without REV the workspace is
checked as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from src import paths

TOLERANCE = 0.005  # across CPU kernel levels: half a point (15 of 3,000 test images)


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def _changed_keys(lock: Any, new: Any, stage: str, section: str) -> list[str]:
    """The params.yaml keys under `section` whose value differs from what dvc.lock recorded for `stage`
    (`lock` and `new`, params.yaml, as `lock_problems` read them once; `new` None where unreadable)."""
    from src.params import not_as_run

    if new is None:
        return [section]
    # the lock holds only the stage's own sections (or dotted keys such as evaluate.batch_size)
    keys = [k for k in not_as_run(new, lock, (stage,)) if k == section or k.startswith(section + ".")]
    return keys or [section]


def _advice(rev: str | None) -> dict[str, str]:
    """What to do about a run record that does not fit: in the workspace, rerun or restore; at a
    revision (someone's commit, checked out in a temporary worktree), its author reruns and commits."""
    if rev is None:
        return {
            "missing": "run `dvc repro`, then commit dvc.lock",
            "broken": "`git checkout dvc.lock` restores the committed one",
            "stage": "run `dvc repro`",
        }
    return {
        "missing": f"{rev} holds no run: `dvc repro` on it, then commit dvc.lock",
        "broken": f"the run record {rev} holds is damaged: `dvc repro` on it, then commit dvc.lock",
        "stage": f"not run at {rev}: `dvc repro` on it, then commit",
    }


def lock_problems(root: Path, rev: str | None = None) -> list[str]:
    """`dvc status --json` as one line per changed output, dependency or param (a param by its key);
    one line for a dvc.lock that is missing or not YAML (DVC then lists every file as changed). `rev`:
    the revision `root` holds (None: the workspace), for the advice."""
    import yaml

    advice = _advice(rev)
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text())
    except FileNotFoundError:
        return [f"dvc.lock: missing: no run is recorded to check against ({advice['missing']})"]
    except (OSError, yaml.YAMLError) as exc:
        from src.params import yaml_error

        why = yaml_error(exc) if isinstance(exc, yaml.YAMLError) else exc.strerror
        return [f"dvc.lock: not readable ({why}); {advice['broken']}"]
    r = _run([sys.executable, "-m", "dvc", "status", "--json"], root)
    if r.returncode != 0:
        last = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        return [f"dvc.lock: `dvc status` failed: {last[0].strip()}"]
    try:  # once for every changed section below (each read it and dvc.lock again)
        new = yaml.safe_load((root / "params.yaml").read_text())
    except (OSError, yaml.YAMLError):
        new = None
    files, params = [], []
    roles: dict[tuple[str, str], dict[str, list[str]]] = {}  # (path, state) → {"output"/"input": stages}
    for stage, changes in sorted((json.loads(r.stdout or "{}")).items()):
        for change in changes:
            if not isinstance(change, dict):
                files.append(f"{stage}: {change} ({advice['stage']})")
                continue
            for kind, entries in change.items():
                for path, state in entries.items():
                    if isinstance(state, dict):  # params.yaml: {section: "modified"}
                        params += [
                            f"{path}: {key} {how} since the run dvc.lock records (stage {stage}): the "
                            "results are not of these params"
                            for section, how in state.items()
                            for key in _changed_keys(lock, new, stage, section)
                        ]
                    else:
                        what = "output" if "out" in kind else "input"
                        roles.setdefault((path, state), {}).setdefault(what, []).append(stage)
    for (path, state), by in roles.items():  # one line a file, however many stages read it
        if params and path == "params.yaml":  # the keys say more than "params.yaml: modified"
            continue
        of = "; ".join(f"{what} of stage{'s' * (len(st) > 1)} {', '.join(st)}" for what, st in sorted(by.items())[::-1])
        files.append(f"{path}: {state} since the run dvc.lock records ({of})")
    out = files + params
    return sorted(set(out), key=out.index)


def rescore(root: Path) -> tuple[str | None, str]:
    """(a problem or None, what was compared): test accuracy from models/best.pt against eval.json."""
    import torch

    from src.data.cifar import Subset
    from src.errors import CheckpointError, DataError
    from src.io import read_json
    from src.params import load_params
    from src.training.checkpoints import load_trained
    from src.training.evaluation import score_test
    from src.training.runtime import uses_channels_last

    try:
        recorded = read_json(root / paths.EVAL_METRICS, ("test_acc",))["test_acc"]
        run = read_json(root / paths.TRAIN_METRICS)
        kernels, device = run.get("cpu_capability"), run.get("device", "cpu")
        p = load_params(root / "params.yaml")
        sub = Subset.load(root / paths.SUBSET)
        model, ck = load_trained(root / paths.BEST, sub.classes)
    except (OSError, ValueError, DataError, CheckpointError) as exc:
        why = str(exc).replace(f"{root}/", "")  # under `verify REV`, root is a temporary worktree, gone after
        return f"{paths.EVAL_METRICS}: cannot recompute the test accuracy: {why}", ""
    x, y = sub.split("test")
    channels_last = uses_channels_last(p.train.channels_last, torch.device("cpu"))
    mean, std = torch.tensor(ck["mean"]), torch.tensor(ck["std"])
    acc = score_test(model, x, y, mean, std, p.evaluate, sub.classes, channels_last)[0]["test_acc"]  # as the stage did
    here = torch.backends.cpu.get_cpu_capability()
    # the evaluate stage scores where the run trained: a GPU's kernels sum in another order too
    same = device == "cpu" and (kernels is None or here == kernels)
    tol = 0.0 if same else TOLERANCE
    if same:
        where = f"the same CPU kernels, {here}"
    elif device == "cpu":
        where = f"{here} kernels here, {kernels} in the run"
    else:
        where = f"{here} kernels here; the run trained and scored on {device}"
    what = f"test accuracy {acc:.4f} recomputed from {paths.BEST} on {len(y)} test images ({where})"
    if abs(acc - recorded) > tol:
        return (
            f"{paths.EVAL_METRICS}: test_acc {recorded} but {paths.BEST} scores {acc} "
            f"({'must be equal on the same CPU kernels' if same else f'allowed ±{TOLERANCE} against other kernels'})"
        ), what
    return None, what


def resolve(root: Path, rev: str) -> str | None:
    """The commit of a git revision or of a `dvc exp` name. A name reused on several commits means,
    as in DVC, the experiment of the commit checked out; None where that leaves no single one."""
    r = _run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], root)
    if r.returncode == 0:
        return r.stdout.strip()
    hits = _experiments(root, rev)
    if len(hits) > 1:
        head = head_commit(root)
        hits = [h for h in hits if h[0] == head]
    return hits[0][1] if len(hits) == 1 else None


def head_commit(root: Path) -> str | None:
    """The full hash of the commit checked out at `root` (None outside git or before a first commit)."""
    r = _run(["git", "rev-parse", "HEAD"], root)
    return r.stdout.strip() if r.returncode == 0 else None


def experiment_refs(root: Path) -> list[tuple[str, str, str]]:
    """(baseline commit, name, experiment commit) of each `dvc exp` experiment in the repo at `root`,
    run here or pulled: DVC's refs/exps/<baseline's first 2 hex digits>/<other 38>/<name>."""
    r = _run(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], root)
    refs = r.stdout.split() if r.returncode == 0 else []
    found = []
    for ref, commit in zip(refs[::2], refs[1::2]):
        parts = ref.split("/")
        baseline = "".join(parts[2:4])
        if len(parts) == 5 and len(baseline) == 40 and all(c in "0123456789abcdef" for c in baseline):
            found.append((baseline, parts[4], commit))
    return found


def _experiments(root: Path, name: str) -> list[tuple[str, str]]:
    """(baseline commit, experiment commit) of each `dvc exp` called `name`."""
    return [(baseline, commit) for baseline, n, commit in experiment_refs(root) if n == name]


def unresolved(root: Path, rev: str, not_found: str) -> str:
    """Why `rev` names no single commit: a queued experiment not run yet, a `dvc exp` name on several
    other commits, else `not_found`."""
    hits = _experiments(root, rev)
    if not hits and rev in queued_runs(root):
        return f"{rev!r} is a queued experiment that has not run yet: no results (`dvc queue status` lists it)"
    if len(hits) < 2:
        return not_found
    return (
        f"{rev!r} names {len(hits)} `dvc exp` runs, none on the commit checked out (their baselines "
        f"{', '.join(b[:7] for b, _ in hits)}): name one by its commit, {' or '.join(c[:7] for _, c in hits)}"
    )


def failed_runs(root: Path) -> dict[str, str]:
    """{name: commit} of the queued `dvc exp run`s that failed. DVC keeps them as entries of the
    reflog of refs/exps/celery/failed, not as experiments, so `resolve` does not find them by name,
    and their commit holds the baseline's results."""
    return _queue_entries(root, "refs/exps/celery/failed")


def queued_runs(root: Path) -> dict[str, str]:
    """{name: commit} of the `dvc exp run --queue` experiments not started yet (DVC's queue stash)."""
    return _queue_entries(root, "refs/exps/celery/stash")


def _queue_entries(root: Path, ref: str) -> dict[str, str]:
    """{name: commit} of the entries of `ref`'s reflog, each "dvc-exp:<rev>:<baseline>:<name>[:<branch>]"."""
    r = _run(["git", "reflog", "show", "--format=%H %gs", ref, "--"], root)
    runs = {}
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        commit, _, subject = line.partition(" ")
        fields = subject.split("dvc-exp:", 1)[1].split(":") if "dvc-exp:" in subject else []
        if len(fields) >= 3 and fields[2]:  # rev, baseline, name[, branch]: DVC's ExpStash message
            runs.setdefault(fields[2], commit)
    return runs


def failed_run_error(root: Path, rev: str, commit: str | None) -> str | None:
    """A line saying that `rev` is a queued experiment that failed (by its name or its commit), or None."""
    runs = failed_runs(root)
    name = rev if rev in runs else next((n for n, c in runs.items() if c == commit), None)
    if name is None or (commit is not None and runs[name] != commit):
        return None
    return (
        f"{rev!r} is a queued experiment that failed: it has no results of its own "
        f"(`dvc queue logs {name}` says why; `dvc exp run -S …` again once fixed)"
    )


@contextmanager
def checked_out(root: Path, commit: str) -> Iterator[Path]:
    """`commit` in a temporary git worktree, its DVC outputs checked out from this repo's cache."""
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        tree = Path(tmp) / "tree"
        made = _run(["git", "worktree", "add", "--detach", "--quiet", str(tree), commit], root)
        if made.returncode != 0:
            raise RuntimeError(f"git worktree add {commit[:12]} failed: {made.stderr.strip()}")
        try:
            _run([sys.executable, "-m", "dvc", "config", "--local", "cache.dir", str(dvc_cache(root))], tree)
            got = _run([sys.executable, "-m", "dvc", "checkout"], tree)
            missing = _not_in_cache(got.stdout + got.stderr) if got.returncode else []
            if missing:  # else each would be a line "deleted since the run", as if someone had removed it
                raise RuntimeError(
                    f"{commit[:12]}: {len(missing)} output(s) of its run are not in this repo's DVC cache "
                    f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}): `dvc pull` (or `dvc exp "
                    "pull <remote> <name>`) brings them, or `dvc repro` on that commit makes them again"
                )
            yield tree
        finally:
            _run(["git", "worktree", "remove", "--force", str(tree)], root)


def dvc_cache(root: Path) -> Path:
    """The DVC cache the repo at `root` uses: `dvc cache dir` (a shared cache set with `dvc cache dir
    <path>` or in config.local), else the default .dvc/cache."""
    got = _run([sys.executable, "-m", "dvc", "cache", "dir"], root)
    lines = got.stdout.strip().splitlines() if got.returncode == 0 else []
    return Path(lines[-1]).resolve() if lines else (root / ".dvc" / "cache").resolve()


def _not_in_cache(output: str) -> list[str]:
    """The targets `dvc checkout` lists under "Checkout failed for following targets:"."""
    after = output.split("Checkout failed for following targets:", 1)
    if len(after) < 2:
        return []
    lines = after[1].split("Is your cache up to date?", 1)[0].splitlines()
    return sorted(line.strip() for line in lines if line.strip())


def verify(root: Path, rev: str | None = None) -> tuple[list[str], str]:
    """Every problem found in the repo at `root` (holding the revision `rev`; None: the workspace),
    and what the re-score compared."""
    problems = lock_problems(root, rev)
    bad, what = rescore(root)
    return problems + ([bad] if bad else []), what


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m src.verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", nargs="?", help="a commit, branch, tag or dvc exp name (default: the workspace)")
    args = ap.parse_args(argv)
    root = Path.cwd()
    if args.rev:
        commit = resolve(root, args.rev)
        failed = failed_run_error(root, args.rev, commit)
        if commit is None or failed:
            missing = f"{args.rev!r} is neither a git revision nor one `dvc exp` name here"
            missing += " (`dvc exp pull <remote> <name>` fetches an experiment)"
            print(f"verify: error: {failed or unresolved(root, args.rev, missing)}", file=sys.stderr)
            return 2
        try:
            with checked_out(root, commit) as tree:
                problems, what = verify(tree, args.rev)
        except RuntimeError as exc:
            print(f"verify: error: {exc}", file=sys.stderr)
            return 2
    else:
        problems, what = verify(root)
    where = args.rev or "the workspace"
    for line in problems:
        print(f"verify: {line}")
    if problems:
        print(f"verify: {where}: {len(problems)} check(s) failed", file=sys.stderr)
        return 1
    print(f"verify: ok — {where}: every output and param equals dvc.lock; {what} equals {paths.EVAL_METRICS}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main())
