"""`vidcache report`: the cache, its mined lists and training runs as one self-contained HTML page."""

from .render import ReportSummary, write_report

__all__ = ["ReportSummary", "write_report"]
