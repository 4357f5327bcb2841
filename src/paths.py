"""Every file and folder the pipeline writes, named once (relative to the repository root).

dvc.yaml's `outs:` list the same paths; the stages take theirs from here rather than from
arguments in `cmd:` (as DVC's example-get-started does) because the same files are read outside
DVC too: the explorer (python -m src.explorer), src.compare and the benchmarks open models/best.pt,
plots/eval/predictions.csv and metrics/*.json by name. One module is then the single place a path
is spelled; tests/test_paths.py checks that every out of dvc.yaml has its constant here and that
no stage or src module spells one itself.
"""

from __future__ import annotations

from pathlib import Path

# check
PARAMS_OK = Path("data/params.ok")  # written once params.yaml is valid; every stage depends on it
# download
RAW = Path("data/raw")  # CIFAR-10 as published: RAW / src.data.raw.BATCHES_DIR
# stats
SUBSET = Path("data/subset.pt")  # the chosen classes and splits, uint8 tensors
STATS = Path("metrics/stats.json")  # mean/std and counts of the subset (not a result)
CLASS_COUNTS = Path("plots/data/class_counts.csv")
SAMPLES_PER_CLASS = Path("plots/data/samples_per_class.png")
CLASS_DISTRIBUTION = Path("plots/data/class_distribution.png")
# train
BEST = Path("models/best.pt")  # the best epoch on the validation split
LAST = Path("models/last.pt")  # the last epoch, with the optimizer state
DVCLIVE_TRAIN = Path("dvclive/train")  # DVCLive's folder for the training run
DVCLIVE_METRICS = DVCLIVE_TRAIN / "plots" / "metrics"  # DVCLive's layout: <split>/<metric>.tsv
LR = Path("plots/train/lr.csv")
TRAIN_METRICS = Path("metrics/train.json")
TIMING = Path("metrics/timing.json")  # seconds and images/s: differs run to run (and so the report)
RUN_CACHE = Path(".cache/train")  # the resume point between an interruption and the next run; not a DVC out
# evaluate
PREDICTIONS = Path("plots/eval/predictions.csv")  # one row per test image, in test order
PER_CLASS = Path("plots/eval/per_class.csv")
EVAL_METRICS = Path("metrics/eval.json")
TEST_RESPONSES = Path(
    "models/test_responses.pt"
)  # per conv channel, the test images exciting it most (visualize's top patches)
# visualize
PLOTS_VISUALIZE = Path("plots/visualize")  # its PNGs
VISUALIZE_SUMMARY = Path("plots/visualize.json")
# theory
PLOTS_THEORY = Path("plots/theory")  # its PNGs
THEORY_METRICS = Path("metrics/theory.json")
# report
REPORT = Path("report")  # the lab report: one DVC out (the PDF is there only where Chromium is)
REPORT_HTML = REPORT / "lab_report.html"  # self-contained: every figure embedded
REPORT_PDF = REPORT / "lab_report.pdf"
REPORT_FIGURES = REPORT / "figures"  # the figures the report adds to the theory sections
REPORT_NUMBERS = REPORT / "numbers.json"  # the numbers it computes (dense vs conv, pixel, neuron, BN, MixUp)
REPORT_TEMPLATE = Path("templates/lab_report.html.j2")  # the layout, Jinja2: edit it to change the page

NOT_OUTS = (RUN_CACHE, REPORT_TEMPLATE)  # named here, not outs: the resume point (untracked), the template (a dep)
