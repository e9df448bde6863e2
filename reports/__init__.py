"""Reports of a conformance run: the structured results document, the HTML report and the regression gate."""
from __future__ import annotations

# This package is harness.reports: the wheel installs it inside harness, and in the checkout harness/reports is a
# link to this directory. Imported as top-level reports, it would be a second copy of every module: refused.
if __name__ != "harness.reports":
    raise ImportError(f"import harness.reports, not {__name__}: the package lives inside harness (issue 18), "
                      "so that a user's own reports package neither shadows it nor is shadowed by it")

__all__ = ["results", "html", "gate", "pytest_reports"]
