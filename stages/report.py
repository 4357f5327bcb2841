"""Stage `report`: the lab report in the manual's order from this run's files → report/lab_report.html
(self-contained), report/lab_report.pdf (where Chromium is), report/figures/*.png and
report/numbers.json (the theory additions of src/lab_report). Layout: templates/lab_report.html.j2;
the page itself: stages/_report_page.py."""

import gc
import subprocess
from contextlib import nullcontext

from src import paths
from src.errors import DataError
from src.io import atomic_path
from src.lab_report.chromium import find_chromium, started
from src.params import Params
from stages._common import run_stage


def main(p: Params) -> None:
    chromium = find_chromium() if p.report.pdf else None
    # Chromium starts before the page's imports (torch, matplotlib): its start-up, about 1 s of one
    # core, runs beside their 2-3 s on the other, and it is ready to print when the page is written
    with started(chromium) if chromium else nullcontext() as browser:
        from stages._report_page import write_page

        gc.freeze()  # as run_stage does before `main`: what was just imported lives until exit
        shown = write_page(p)
        if browser:
            try:
                with atomic_path(paths.REPORT_PDF) as tmp:
                    browser.print_pdf(paths.REPORT_HTML, tmp)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                raise DataError(
                    f"{exc}; the HTML is written ({paths.REPORT_HTML}); -S report.pdf=false skips the PDF"
                ) from None
    if p.report.pdf and not chromium:
        print(
            f"report: no Chromium here, so no PDF: open {paths.REPORT_HTML} in a browser and print it to PDF, "
            "or install Chromium (Debian/Ubuntu: apt install chromium; or set CHROMIUM=/path/to/chrome)"
        )
    print(f"report: {paths.REPORT_HTML} ({shown} figures{', PDF ' + str(paths.REPORT_PDF) if chromium else ''})")


if __name__ == "__main__":
    run_stage("report", main)
