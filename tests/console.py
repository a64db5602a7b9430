"""What a command's console may hold without --verbose: our own lines, progress bars and real
errors. ``library_noise`` returns the lines that look like a library's warning or log record
instead (a Python warning, a WARNING/ERROR log line, a Ray Core C++ line), so a test can fail
on any that a change to Ray, MLflow or our code lets through."""

import re

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SUSPECT = re.compile(
    r"(?i)warn|\berror|deprecat|traceback"
    r"|\.(cc|h|py):\d+"  # a source location: a Python warning or a C++ log line
    r"|progress bars disabled"
    r"|\[\d{4}-\d\d-\d\d [\d:,]+ [IWEF] \d+"  # Ray Core's C++ log prefix
)


def library_noise(console: str) -> list[str]:
    """The suspect lines of ``console`` (stdout and stderr, progress bars' carriage returns
    and colour codes included)."""
    lines = (ANSI.sub("", line).strip() for line in re.split(r"[\r\n]", console))
    return [line for line in lines if line and SUSPECT.search(line)]
