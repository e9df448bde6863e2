"""Reports of a conformance run: the structured results document, the HTML report and the regression gate."""
from __future__ import annotations

__all__ = ["results", "html", "gate", "pytest_reports"]
