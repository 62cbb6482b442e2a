"""Exceptions raised by vhostmd_guest.

Every error this package raises on purpose is a :class:`MetricsError`, so
callers that only want "it worked or it did not" catch that one class.
"""


class MetricsError(Exception):
    """Base class of every error raised by this package."""


# -- the metrics disk --------------------------------------------------------


class DiskError(MetricsError):
    """The metrics disk could not be read."""


class NoMetricsDiskError(DiskError):
    """No block device carries the metrics disk signature."""


class BadSignatureError(DiskError):
    """The device does not start with the ``mvbd`` signature."""


class TruncatedDiskError(DiskError):
    """The device ended before a full header or the announced content."""


class LengthPastEndError(DiskError):
    """The header's content length runs past the end of the device."""


class DiskBusyError(DiskError):
    """The writer kept the busy flag set for every attempt."""


class ChecksumMismatchError(DiskError):
    """The content does not add up to the header's checksum."""


class DiskUnstableError(DiskError):
    """The header changed between the start and the end of every read."""


# -- the virtio port ---------------------------------------------------------


class VirtioError(MetricsError):
    """The exchange over the virtio-serial port failed."""


class PortNotFoundError(VirtioError):
    """The virtio-serial port does not exist."""


class VirtioTimeoutError(VirtioError, TimeoutError):
    """The host did not take the request or finish its answer in time."""


class InvalidRequestError(VirtioError):
    """The host answered ``INVALID REQUEST``."""


class AnswerTooLargeError(VirtioError):
    """The answer grew past the size cap without ending."""


class ChannelClosedError(VirtioError):
    """The host end of the channel went away before the answer ended."""


# -- xenstore ----------------------------------------------------------------


class XenstoreError(MetricsError):
    """The metrics could not be read from xenstore."""


# -- the document ------------------------------------------------------------


class DocumentError(MetricsError):
    """The metrics document is not XML or not shaped like one."""


class MetricNotFoundError(MetricsError, KeyError):
    """No metric has the requested name and context."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class AmbiguousMetricError(MetricsError, LookupError):
    """Several VMs carry the metric and no uuid was given to choose one."""


class MetricValueError(MetricsError, ValueError):
    """A metric's value cannot be read as its declared type."""


# -- all sources -------------------------------------------------------------


class NoSourceError(MetricsError):
    """Every source that was tried failed.

    ``errors`` maps each source name to the exception it raised, in the order
    the sources were tried.
    """

    def __init__(self, errors):
        self.errors = errors
        lines = ["no metrics source worked:"]
        lines.extend("  {}: {}".format(name, err) for name, err in errors.items())
        super().__init__("\n".join(lines))
