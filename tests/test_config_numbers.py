"""Numbers in the configuration follow C's rules, and no configuration gives a traceback.

The C vhostmd reads its numbers with atoi: ASCII digits. Python's int()
also takes "1_0" and digits of other scripts, and a 400-digit period used to
reach a float conversion and fail there with a traceback. Every setting has
bounds, and whatever the file holds, the result is a configuration or an
error naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support import ROOT, config_xml, metric, vhostmd
from vhostmd import config
from vhostmd.publish import capacity
from vhostmd.cli import describe
from vhostmd.config import ConfigError

VIRTIO = ("<virtio><channel_path>/c</channel_path><max_channels>{max}</max_channels>"
          "<expiration_time>{exp}</expiration_time><rate_limit>{rate}</rate_limit>"
          "<rate_burst>{burst}</rate_burst></virtio>")


def conf(period="5", size="64", max_channels="16", expiration="15", rate="2", burst="5",
         action_timeout="1.5", timeout="0.5") -> str:
    return config_xml(
        metric("A", "echo a", attrs=f' timeout="{timeout}"') + metric("B", "echo 1", "uint32", "vm"),
        disk=Path("/d"), size=f'<size unit="k">{size}</size>', transports=("vbd", "virtio"),
        virtio=VIRTIO.format(max=max_channels, exp=expiration, rate=rate, burst=burst),
        extra_globals=f"<action_timeout>{action_timeout}</action_timeout>",
    ).replace("<update_period>1<", f"<update_period>{period}<")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        config.parse(text.encode(), "test.conf")
    return info.value


def test_plain_numbers_are_read():
    cfg = config.parse(conf(period=" 86400\n", size="0064", rate="0.5", burst="10").encode(), "t")
    assert cfg.update_period == 86400
    assert cfg.disk.size == 64 * 1024
    assert (cfg.virtio.rate_limit, cfg.virtio.rate_burst) == (0.5, 10)


ARABIC_INDIC_10 = "\u0661\u0660"
FULLWIDTH_5 = "\uff15"


@pytest.mark.parametrize("setting", ["period", "size", "max_channels", "expiration", "burst"])
@pytest.mark.parametrize("value", [
    "1_0", ARABIC_INDIC_10, FULLWIDTH_5, "+5", "-5", "5.0", "0x10", "1e3", "5 5", "", "\u20035",
])
def test_integers_are_ascii_digits_only(setting, value):
    err = error_of(conf(**{setting: value}))
    assert "is not an integer (ASCII digits only)" in err.message
    assert err.line and str(err).startswith(f"test.conf:{err.line}: ")


@pytest.mark.parametrize("setting", ["rate", "action_timeout", "timeout"])
@pytest.mark.parametrize("value", ["1_0", ARABIC_INDIC_10, "1e3", "inf", "nan", "-1", "0x1p3", ""])
def test_decimals_are_ascii_digits_only(setting, value):
    err = error_of(conf(**{setting: value}))
    assert "is not a positive number" in err.message
    assert err.line and str(err).startswith(f"test.conf:{err.line}: ")


@pytest.mark.parametrize("setting, value, message", [
    ("period", "0", "update_period 0 is less than 1"),
    ("period", "86401", "update_period 86401 is more than 86400"),
    ("period", "99999999999999999999", "update_period 99999999999999999999 is more than 86400"),
    ("period", "9" * 400, "is more than 86400"),
    ("size", "9" * 400, "disk size 9999"),
    ("size", "262145", "outside 1024..268435456"),
    ("max_channels", "65537", "max_channels 65537 is more than 65536"),
    ("expiration", "9" * 30, "expiration_time 9999"),
    ("burst", "0", "rate_burst 0 is less than 1"),
    ("burst", "10001", "rate_burst 10001 is more than 10000"),
    ("rate", "0.001", "rate_limit 0.001 is less than 0.01"),
    ("rate", "100000", "rate_limit 100000 is more than 10000"),
    ("rate", "9" * 400, "rate_limit 9999"),
    ("action_timeout", "0", "action_timeout 0 is not a positive number"),
    ("action_timeout", "86401", "action_timeout 86401 is more than 86400"),
    ("timeout", "1" + "0" * 300, "timeout 1000"),
])
def test_numbers_out_of_bounds_are_errors(setting, value, message):
    err = error_of(conf(**{setting: value}))
    assert message in err.message
    assert len(str(err)) < 200  # a huge number is cut short in the message
    assert err.line and str(err).startswith(f"test.conf:{err.line}: ")


@pytest.mark.parametrize("value", ["9" * 400, "1_0", ARABIC_INDIC_10, "99999999999999999999"])
def test_the_daemon_reports_a_bad_period_without_a_traceback(tmp_path, value):
    path = tmp_path / "vhostmd.conf"
    path.write_text(conf(period=value).replace("/d<", f"{tmp_path / 'disk'}<"))
    for mode in ("--check", "--once"):
        run = vhostmd(mode, "-f", str(path), "-c", "test:///default")
        assert run.returncode == 1
        assert "Traceback" not in run.stderr
        assert re.search(rf"{re.escape(str(path))}:\d+: update_period ", run.stderr), run.stderr
    assert not (tmp_path / "disk").exists()


# --- any configuration: a clear error or a usable configuration ------------------------

SHIPPED = (ROOT / "conf" / "vhostmd.conf").read_text()
#: The shipped configuration plus every extension that takes a number.
BASE = SHIPPED.replace(
    "<expiration_time>15</expiration_time>",
    "<expiration_time>15</expiration_time><rate_limit>2</rate_limit><rate_burst>5</rate_burst>",
).replace(
    "<transport>vbd</transport>",
    "<action_timeout>2.5</action_timeout><transport>vbd</transport>",
).replace(
    "<metrics>",
    '<metrics>\n    <metric type="uint32" context="host" timeout="1.5"><name>N</name>'
    "<action>echo 1</action></metric>",
    1,
)
#: Where numbers are: element text and the timeout attribute.
NUMBER_SLOTS = [m.span(1) for m in re.finditer(r'(?:>|timeout=")\s*([0-9][0-9.]*)\s*(?:<|")', BASE)]
assert len(NUMBER_SLOTS) == 8, NUMBER_SLOTS  # size, virtio (4), period, action_timeout, timeout

numbers = st.one_of(
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.text(alphabet="0123456789", min_size=1, max_size=500),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.sampled_from(list("0123456789_+-.eExX \t\u0660\u0661\u06f5\uff15\u2003\u00a0")),
            max_size=30),
    st.text(max_size=20),
)


@st.composite
def mutated_configs(draw) -> str:
    text = BASE
    # Numbers replaced with anything (positions from the end, so earlier ones stay valid).
    slots = draw(st.lists(st.sampled_from(NUMBER_SLOTS), unique=True, max_size=4))
    for start, end in sorted(slots, reverse=True):
        value = draw(numbers)
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")
        text = text[:start] + value + text[end:]
    # And a few characters anywhere cut, doubled or replaced.
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text) - 1))
        kind = draw(st.sampled_from(["cut", "double", "replace"]))
        if kind == "cut":
            text = text[:at] + text[at + 1:]
        elif kind == "double":
            text = text[:at] + text[at] + text[at:]
        else:
            text = text[:at] + draw(st.characters(codec="utf-8")) + text[at + 1:]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_any_configuration_is_an_error_with_file_and_line_or_runs(text):
    try:
        cfg = config.parse(text.encode("utf-8", "surrogatepass"), "mutated.conf")
    except ConfigError as err:
        assert isinstance(err.line, int) and err.line >= 1, str(err)
        assert str(err).startswith(f"mutated.conf:{err.line}: ")
        return
    # A configuration that parses is one the daemon can run with.
    assert 1 <= cfg.update_period <= config.UPDATE_PERIOD_MAX
    assert config.DISK_SIZE_MIN <= cfg.disk.size <= config.DISK_SIZE_MAX
    assert 0 < cfg.action_timeout <= config.SECONDS_MAX
    assert cfg.virtio.expiration_time <= 3 * config.UPDATE_PERIOD_MAX
    assert config.RATE_LIMIT_MIN <= cfg.virtio.rate_limit <= config.RATE_LIMIT_MAX
    describe(cfg)
    capacity.estimate(cfg)
