"""File Conveyor: notice files that appear, change or disappear, process them, push them
to servers, and remember where each one went.  See README.md and docs/."""

__version__ = "0.1.0"
