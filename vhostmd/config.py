"""The configuration file: parsing, validation and the typed settings.

The format is the C vhostmd's ``vhostmd.conf`` (see dtd/vhostmd.dtd, a
superset of the reference's DTD), so an existing configuration runs unchanged.
Every error names the file and the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from .collect import builtins
from .publish.disk_format import SIZE_MAX as DISK_SIZE_MAX, SIZE_MIN as DISK_SIZE_MIN

DEFAULT_CONFIG = Path("/etc/vhostmd/vhostmd.conf")
DEFAULT_DISK_PATH = Path("/dev/shm/vhostmd0")
DEFAULT_DISK_SIZE = 256 * 1024
DEFAULT_CHANNEL_PATH = Path("/var/lib/libvirt/qemu/channel/target")
DEFAULT_MAX_CHANNELS = 1024
DEFAULT_EXPIRATION = 15
DEFAULT_RATE_LIMIT = 2.0
DEFAULT_RATE_BURST = 5
#: Bounds of the numeric settings. A number outside them is a configuration
#: error: a period of 10**20 s would never update again, and a huge value
#: must not reach a timer or a float conversion and fail there.
UPDATE_PERIOD_MAX = 86400
MAX_CHANNELS_MAX = 65536
EXPIRATION_MAX = 3 * UPDATE_PERIOD_MAX
SECONDS_MAX = 86400.0
RATE_LIMIT_MIN = 0.01
RATE_LIMIT_MAX = 10000.0
RATE_BURST_MAX = 10000
#: oxenstored's and C xenstored's default quota for one value, in bytes.
DEFAULT_XENSTORE_MAX_SIZE = 2048
XENSTORE_MAX_SIZE_MIN = 256
#: A write's payload (path, NUL, value) is at most 4096 bytes; the longest
#: path is /local/domain/32767/metrics (27 bytes).
XENSTORE_MAX_SIZE_MAX = 4096 - len("/local/domain/32767/metrics") - 1
#: An action gets at most this long by default, and never more than half the
#: update period, so one stuck action cannot make the daemon miss its period.
ACTION_TIMEOUT_CAP = 10.0

TRANSPORTS = ("vbd", "virtio", "xenstore")

_DTD_NAME = "vhostmd.dtd"
#: Numbers as C's atoi/strtod read them from the C vhostmd's configuration:
#: ASCII digits only (Python's int() would also take "1_0" and other
#: scripts' digits), and plain decimals for the extensions' seconds.
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
#: What C's isspace() skips around a number (str.strip() would also drop
#: Unicode spaces).
_C_SPACE = " \t\n\r\v\f"


class ConfigError(Exception):
    """A configuration that cannot be used. ``str()`` gives ``file:line: what``."""

    def __init__(self, path: Path | str, line: int | None, message: str):
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line else f"{path}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Variable:
    """One value of a ``group`` metric."""

    name: str
    type: str
    unit: str | None = None


@dataclass(frozen=True)
class MetricDef:
    """One ``<metric>`` of the configuration."""

    name: str
    type: str
    context: str
    action: str | None = None
    builtin: str | None = None
    unit: str | None = None
    variables: tuple[Variable, ...] = ()
    timeout: float | None = None
    line: int = 0

    def outputs(self) -> tuple[Variable, ...]:
        """The (name, type, unit) of each value this metric publishes.

        A ``group`` publishes one value per variable; its ``unit`` attribute,
        as in the C daemon, is a comma-separated list matched to the variables
        in order (a variable's own ``unit`` wins). ``xml`` metrics publish
        whatever elements the action prints, so they have no fixed outputs.
        """
        if self.type == "group":
            units = self.unit.split(",") if self.unit else []
            out = []
            for i, var in enumerate(self.variables):
                unit = var.unit or (units[i].strip() if i < len(units) else None)
                out.append(Variable(var.name, var.type, unit or None))
            return tuple(out)
        if self.type == "xml":
            return ()
        return (Variable(self.name, self.type, self.unit),)


@dataclass(frozen=True)
class DiskConfig:
    """The metrics disk (transport ``vbd``)."""

    name: str = "host-metrics-disk"
    path: Path = DEFAULT_DISK_PATH
    size: int = DEFAULT_DISK_SIZE
    #: Extension: a directory in which one disk per running VM is written.
    per_vm_dir: Path | None = None


@dataclass(frozen=True)
class VirtioConfig:
    """The virtio-serial channels (transport ``virtio``)."""

    channel_path: Path = DEFAULT_CHANNEL_PATH
    max_channels: int = DEFAULT_MAX_CHANNELS
    expiration_time: int = DEFAULT_EXPIRATION
    #: Extension: requests per second a channel may make, and burst size.
    rate_limit: float = DEFAULT_RATE_LIMIT
    rate_burst: int = DEFAULT_RATE_BURST


@dataclass(frozen=True)
class XenstoreConfig:
    """Each Xen domain's metrics in xenstore (transport ``xenstore``)."""

    #: Extension: the largest document written; a larger one is not written.
    max_size: int = DEFAULT_XENSTORE_MAX_SIZE


@dataclass(frozen=True)
class Config:
    """Everything the daemon takes from its configuration file."""

    source: Path
    update_period: int
    disk: DiskConfig = field(default_factory=DiskConfig)
    virtio: VirtioConfig = field(default_factory=VirtioConfig)
    xenstore: XenstoreConfig = field(default_factory=XenstoreConfig)
    #: PATH for actions; None keeps the daemon's own PATH.
    search_path: str | None = None
    transports: frozenset[str] = frozenset({"vbd"})
    action_timeout: float = 2.5
    metrics: tuple[MetricDef, ...] = ()
    #: Problems that did not stop the configuration from being used.
    warnings: tuple[str, ...] = ()

    @property
    def vm_expiration(self) -> int:
        """Seconds a VM may go without an update before what is kept for it goes.

        Its virtio channel is closed and its per-VM disk removed. The file
        has one setting for both: ``<virtio><expiration_time>``.
        """
        return self.virtio.expiration_time

    @property
    def host_metrics(self) -> tuple[MetricDef, ...]:
        return tuple(m for m in self.metrics if m.context == "host")

    @property
    def vm_metrics(self) -> tuple[MetricDef, ...]:
        return tuple(m for m in self.metrics if m.context == "vm")


def dtd_path(name: str = _DTD_NAME) -> Path:
    """Where the DTD *name* is: installed beside the package, or in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "dtd" / name, here.parent / "dtd" / name):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found beside {here}")


def _parser() -> etree.XMLParser:
    # No entity expansion, no DTD loading, no network: the file's DOCTYPE is
    # ignored and the document is validated against our own DTD instead.
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False,
        dtd_validation=False, huge_tree=False,
    )


def load(path: Path | str) -> Config:
    """Read, validate and interpret the configuration file at *path*."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(path, None, f"cannot read configuration: {err.strerror}") from None
    return parse(data, path)


def parse(data: bytes, source: Path | str = "<config>") -> Config:
    """Interpret configuration *data*; *source* names it in error messages."""
    source = Path(source)
    try:
        tree = etree.fromstring(data, _parser()).getroottree()
    except etree.XMLSyntaxError as err:
        raise ConfigError(source, err.lineno, f"not well-formed XML: {err.msg}") from None
    root = tree.getroot()
    if root.tag != "vhostmd":
        raise ConfigError(source, root.sourceline, f"root element is <{root.tag}>, expected <vhostmd>")
    internal = tree.docinfo.internalDTD
    if internal is not None and any(True for _ in internal.iterentities()):
        raise ConfigError(source, 1, "entity declarations are not allowed in the configuration")
    dtd = etree.DTD(str(dtd_path()))
    if not dtd.validate(root):
        err = dtd.error_log.filter_from_errors()[0]
        raise ConfigError(source, err.line, f"does not match {_DTD_NAME}: {err.message}")
    return _Interpreter(source).run(root)


class _Interpreter:
    """Turns a DTD-valid tree into a Config, checking what a DTD cannot."""

    def __init__(self, source: Path):
        self.source = source
        self.warnings: list[str] = []

    def error(self, elem, message: str) -> ConfigError:
        return ConfigError(self.source, elem.sourceline, message)

    def warn(self, elem, message: str) -> None:
        self.warnings.append(f"{self.source}:{elem.sourceline}: {message}")

    def run(self, root) -> Config:
        globals_ = root.find("globals")
        period_elem = globals_.find("update_period")
        period = self.integer(period_elem, "update_period", minimum=1, maximum=UPDATE_PERIOD_MAX)
        transports = self.transports(globals_)
        disk = self.disk(globals_.find("disk"))
        virtio = self.virtio(globals_.find("virtio"), period)
        xenstore = self.xenstore(globals_.find("xenstore"))
        path_elem = globals_.find("path")
        search_path = _text(path_elem) if path_elem is not None else None
        timeout_elem = globals_.find("action_timeout")
        if timeout_elem is not None:
            action_timeout = self.seconds(timeout_elem, "action_timeout")
        else:
            action_timeout = min(ACTION_TIMEOUT_CAP, max(1.0, period / 2))
        metrics = tuple(
            m for m in (self.metric(e) for e in root.find("metrics").iterfind("metric")) if m
        )
        return Config(
            source=self.source,
            update_period=period,
            disk=disk,
            virtio=virtio,
            xenstore=xenstore,
            search_path=search_path or None,
            transports=transports,
            action_timeout=action_timeout,
            metrics=metrics,
            warnings=tuple(self.warnings),
        )

    def integer(self, elem, what: str, minimum: int, maximum: int) -> int:
        """An integer of ASCII digits from *elem*'s text, within minimum..maximum."""
        text = (elem.text or "").strip(_C_SPACE)
        if not _INTEGER.fullmatch(text):
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise self.error(elem, f"{what} {shown!r} is not an integer (ASCII digits only)")
        # Compared as text first: a 400-digit number is not worth converting.
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(maximum)) or int(digits) > maximum:
            shown = digits if len(digits) <= 40 else digits[:40] + "..."
            raise self.error(elem, f"{what} {shown} is more than {maximum}")
        value = int(digits)
        if value < minimum:
            raise self.error(elem, f"{what} {value} is less than {minimum}")
        return value

    def seconds(self, elem, what: str, text: str | None = None, minimum: float = 0.0,
                maximum: float = SECONDS_MAX) -> float:
        """A positive decimal number from *elem*'s text (or *text*), at most *maximum*.

        *minimum* is exclusive when 0 (any positive number), inclusive otherwise.
        """
        raw = elem.text if text is None else text
        text = (raw or "").strip(_C_SPACE)
        shown = text if len(text) <= 40 else text[:40] + "..."
        if not _DECIMAL.fullmatch(text):
            raise self.error(elem, f"{what} {shown!r} is not a positive number "
                                   "(ASCII digits, an optional decimal point)")
        if len(text.lstrip("0").split(".")[0]) > 15:
            raise self.error(elem, f"{what} {shown} is more than {maximum:g}")
        value = float(text)
        if value > maximum:
            raise self.error(elem, f"{what} {shown} is more than {maximum:g}")
        if value <= 0 or value < minimum:
            raise self.error(elem, f"{what} {shown} is less than {minimum:g}" if minimum
                             else f"{what} {shown} is not a positive number")
        return value

    def transports(self, globals_) -> frozenset[str]:
        found: set[str] = set()
        for elem in globals_.iterfind("transport"):
            # The C daemon matches a case-insensitive prefix ("VBD0" is vbd).
            text = _text(elem).lower()
            match = next((t for t in TRANSPORTS if text.startswith(t)), None)
            if match is None:
                self.warn(elem, f"unknown transport {_text(elem)!r} ignored")
            else:
                found.add(match)
        if not found:
            self.warn(globals_, "no usable transport configured; using vbd")
            found.add("vbd")
        return frozenset(found)

    def disk(self, elem) -> DiskConfig:
        if elem is None:
            return DiskConfig()
        path = _text(elem.find("path"))
        size_elem = elem.find("size")
        unit = size_elem.get("unit", "").strip()
        multiplier = {"k": 1024, "m": 1024 * 1024}.get(unit.lower())
        if multiplier is None:
            raise self.error(size_elem, f"disk size unit {unit!r} is not k or m")
        count = self.integer(size_elem, "disk size", minimum=0, maximum=DISK_SIZE_MAX)
        size = count * multiplier
        if not DISK_SIZE_MIN <= size <= DISK_SIZE_MAX:
            raise self.error(
                size_elem,
                f"disk size {size} bytes is outside {DISK_SIZE_MIN}..{DISK_SIZE_MAX}",
            )
        per_vm = elem.find("per_vm")
        per_vm_dir = Path(_text(per_vm)) if per_vm is not None and _text(per_vm) else None
        return DiskConfig(
            name=_text(elem.find("name")),
            path=Path(path) if path else DEFAULT_DISK_PATH,
            size=size,
            per_vm_dir=per_vm_dir,
        )

    def xenstore(self, elem) -> XenstoreConfig:
        if elem is None or elem.find("max_size") is None:
            return XenstoreConfig()
        size_elem = elem.find("max_size")
        # The bound below says why; this one only keeps huge numbers out.
        size = self.integer(size_elem, "xenstore max_size", minimum=XENSTORE_MAX_SIZE_MIN,
                            maximum=1 << 20)
        if size > XENSTORE_MAX_SIZE_MAX:
            raise self.error(
                size_elem,
                f"xenstore max_size {size} is over {XENSTORE_MAX_SIZE_MAX} bytes, the most "
                f"xenstore's 4096-byte messages can carry",
            )
        return XenstoreConfig(max_size=size)

    def virtio(self, elem, period: int) -> VirtioConfig:
        if elem is None:
            return VirtioConfig(expiration_time=max(DEFAULT_EXPIRATION, 3 * period))
        channel_path = _text(elem.find("channel_path"))
        max_channels = self.integer(elem.find("max_channels"), "max_channels", minimum=0,
                                    maximum=MAX_CHANNELS_MAX)
        expiration = self.integer(elem.find("expiration_time"), "expiration_time", minimum=0,
                                  maximum=EXPIRATION_MAX)
        if expiration < 3 * period:
            self.warn(
                elem.find("expiration_time"),
                f"expiration_time {expiration} raised to {3 * period} (3 x update_period)",
            )
            expiration = 3 * period
        rate_elem = elem.find("rate_limit")
        burst_elem = elem.find("rate_burst")
        rate = (
            self.seconds(rate_elem, "rate_limit", minimum=RATE_LIMIT_MIN, maximum=RATE_LIMIT_MAX)
            if rate_elem is not None else DEFAULT_RATE_LIMIT
        )
        burst = (
            self.integer(burst_elem, "rate_burst", minimum=1, maximum=RATE_BURST_MAX)
            if burst_elem is not None else DEFAULT_RATE_BURST
        )
        return VirtioConfig(
            channel_path=Path(channel_path) if channel_path else DEFAULT_CHANNEL_PATH,
            max_channels=max_channels,
            expiration_time=expiration,
            rate_limit=rate,
            rate_burst=burst,
        )

    def metric(self, elem) -> MetricDef | None:
        type_ = elem.get("type")
        context = elem.get("context")
        name = _text(elem.find("name"))
        unit = (elem.get("unit") or "").strip() or None
        if not name:
            self.warn(elem, "metric without a name skipped")
            return None
        action_elem = elem.find("action")
        builtin_elem = elem.find("builtin")
        action = builtin = None
        if action_elem is not None:
            action = _text(action_elem)
            if not action:
                self.warn(elem, f"metric {name!r} has an empty action; skipped")
                return None
        else:
            builtin = _text(builtin_elem)
            spec = builtins.REGISTRY.get(builtin)
            if spec is None:
                raise self.error(builtin_elem, f"unknown builtin {builtin!r} for metric {name!r}")
            if spec.context != context:
                raise self.error(
                    builtin_elem,
                    f"builtin {builtin!r} is a {spec.context} metric, but metric {name!r} "
                    f"has context {context!r}",
                )
        timeout_attr = elem.get("timeout")
        timeout = self.seconds(elem, "timeout", timeout_attr) if timeout_attr is not None else None
        variables = tuple(
            Variable(v.get("name").strip(), v.get("type"), (v.get("unit") or "").strip() or None)
            for v in elem.iterfind("variable")
        )
        if type_ == "group" and not variables:
            self.warn(elem, f"group metric {name!r} has no variables; skipped")
            return None
        if type_ != "group" and variables:
            self.warn(elem, f"variables of non-group metric {name!r} ignored")
            variables = ()
        metric = MetricDef(
            name=name, type=type_, context=context, action=action, builtin=builtin,
            unit=unit, variables=variables, timeout=timeout, line=elem.sourceline or 0,
        )
        if builtin is not None:
            wanted = len(metric.outputs()) if type_ != "xml" else 0
            if type_ == "xml" or wanted != builtins.REGISTRY[builtin].values:
                raise self.error(
                    builtin_elem,
                    f"builtin {builtin!r} gives {builtins.REGISTRY[builtin].values} value(s); "
                    f"metric {name!r} of type {type_} takes {wanted or 'none'}",
                )
            for out in metric.outputs():
                why = builtins.REGISTRY[builtin].type_error(out.type)
                if why:
                    raise self.error(builtin_elem, f"metric {name!r}: {why}")
        return metric


def _text(elem) -> str:
    return (elem.text or "").strip() if elem is not None else ""
