"""What a run and a sweep leave for people to look at: `report.html` in every run directory and
`sweep_report.html` in a multirun's, self-contained files that open offline in any browser."""

from seglab.report.run_report import REPORT_FILE, write_run_report
from seglab.report.sweep_report import SWEEP_REPORT_FILE, write_sweep_report

__all__ = ["REPORT_FILE", "SWEEP_REPORT_FILE", "write_run_report", "write_sweep_report"]
