"""Stage `download`: CIFAR-10 into data/raw/cifar-10-batches-py (official URL, or $CIFAR10_MIRROR)."""

import sys

from src import paths
from src.data.raw import install_raw, mirror_from_env
from src.params import Params
from stages._common import run_stage


def main(p: Params) -> None:
    d = p.download
    path = install_raw(
        paths.RAW,
        d.url,
        d.md5,
        mirror_from_env(),
        retries=d.retries,
        backoff_s=d.backoff_s,
        timeout_s=d.timeout_s,
        progress=sys.stderr.isatty(),
    )
    print(f"download: CIFAR-10 ready in {path}")


if __name__ == "__main__":
    run_stage("download", main)
