"""Reading a guest's serial console log: the sections its /init printed between markers."""

import re
from dataclasses import dataclass, field

_SECTION = re.compile(r"^@@E2E BEGIN (\S+)@@\n(.*?)\n@@E2E END \1@@$", re.S | re.M)
_RESULT = re.compile(r"^@@E2E RESULT (\S+) rc=(\d+) attempts=(\d+)[^@]*@@$", re.M)


@dataclass
class ConsoleReport:
    text: str
    sections: dict[str, str] = field(default_factory=dict)
    results: dict[str, tuple[int, int]] = field(default_factory=dict)  # label -> (rc, attempts)
    done: bool = False

    def section(self, label: str) -> str:
        if label not in self.sections:
            raise AssertionError(f"the guest printed no {label!r} section; console:\n{self.text[-4000:]}")
        return self.sections[label]


def parse(raw: bytes) -> ConsoleReport:
    # The serial line is a tty: each newline arrives as CR LF.
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    report = ConsoleReport(text)
    for match in _SECTION.finditer(text):
        # /init adds one newline after each output; the regex consumed it.
        report.sections[match.group(1)] = match.group(2)
    for match in _RESULT.finditer(text):
        report.results[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    report.done = re.search(r"^@@E2E DONE[^@]*@@$", text, re.M) is not None
    return report
