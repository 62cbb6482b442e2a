"""The configuration file: what an admin's existing vhostmd.conf means, and every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import ROOT, config_xml, metric, vhostmd
from vhostmd import cli, config
from vhostmd.config import ConfigError


def parse(text: str) -> config.Config:
    return config.parse(text.encode(), "test.conf")


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value


REFERENCE_STYLE = """<?xml version="1.0" ?>
<!DOCTYPE vhostmd SYSTEM "vhostmd.dtd">
<!-- a configuration written for the C vhostmd -->
  <vhostmd>
    <globals>
      <disk>
        <name>host-metrics-disk</name>
        <path>/dev/shm/vhostmd0</path>
        <size unit="k">256</size>
      </disk>
      <virtio>
        <channel_path>/var/run/libvirt/qemu/channel</channel_path>
        <max_channels>1024</max_channels>
        <expiration_time>15</expiration_time>
      </virtio>
      <update_period>5</update_period>
      <path>/usr/sbin:/sbin:/usr/bin:/bin:/usr/share/vhostmd/scripts</path>
      <transport>vbd</transport>
      <transport>virtio</transport>
    </globals>
    <metrics>
      <metric type="string" context="host">
        <name>HostName</name>
        <action>
          virsh CONNECT hostname | tr -d '[:space:]'
        </action>
      </metric>
      <metric type="group" context="host" cnt="2">
        <name>PageRates</name>
        <action>pagerate.pl</action>
        <variable name="PageInRate" type="uint64"/>
        <variable name="PageFaultRate" type="uint64"/>
      </metric>
      <metric type="uint64" context="host">
        <name>UsedMem</name>
        <action>
          [ -f /proc/xen/privcmd ] &amp;&amp; echo 1 || free | awk '{ print $3 }'
        </action>
      </metric>
      <metric type="real64" context="vm" unit="s">
        <name>TotalCPUTime</name>
        <action>virsh CONNECT dominfo NAME | awk '/CPU time/ {print $3}'</action>
      </metric>
    </metrics>
  </vhostmd>
"""


def test_reference_style_configuration_is_read_unchanged():
    cfg = parse(REFERENCE_STYLE)
    assert cfg.disk.path == Path("/dev/shm/vhostmd0")
    assert cfg.disk.size == 256 * 1024
    assert cfg.update_period == 5
    assert cfg.search_path == "/usr/sbin:/sbin:/usr/bin:/bin:/usr/share/vhostmd/scripts"
    assert cfg.transports == {"vbd", "virtio"}
    assert cfg.virtio.channel_path == Path("/var/run/libvirt/qemu/channel")
    assert cfg.virtio.max_channels == 1024
    assert cfg.virtio.expiration_time == 15
    names = [(m.name, m.type, m.context) for m in cfg.metrics]
    assert names == [
        ("HostName", "string", "host"),
        ("PageRates", "group", "host"),
        ("UsedMem", "uint64", "host"),
        ("TotalCPUTime", "real64", "vm"),
    ]
    group = cfg.metrics[1]
    assert [(v.name, v.type) for v in group.outputs()] == [("PageInRate", "uint64"), ("PageFaultRate", "uint64")]
    # Entities in actions are plain XML: &amp;&amp; is the shell's &&.
    assert "&&" in cfg.metrics[2].action
    assert cfg.metrics[3].unit == "s"
    assert cfg.warnings == ()


@pytest.mark.parametrize("name", ["vhostmd.conf", "vhostmd-upstream.conf"])
def test_shipped_configurations_are_valid(name):
    path = ROOT / "conf" / name
    if not path.exists():
        pytest.skip(f"{name} not shipped")
    cfg = config.load(path)
    assert cfg.metrics


def test_defaults_for_empty_and_missing_settings(tmp_path):
    cfg = parse(config_xml(metric("A", "echo a"), disk="", period=10))
    assert cfg.disk.path == config.DEFAULT_DISK_PATH
    # No virtio element: channel defaults, expiration raised to 3 x period.
    assert cfg.virtio.channel_path == config.DEFAULT_CHANNEL_PATH
    assert cfg.virtio.expiration_time == 30
    # The action timeout stays well under the period.
    assert cfg.action_timeout == 5


def test_expiration_time_raised_to_three_update_periods():
    virtio = ("<virtio><channel_path>/c</channel_path><max_channels>8</max_channels>"
              "<expiration_time>4</expiration_time></virtio>")
    cfg = parse(config_xml(metric("A", "echo a"), period=5, virtio=virtio, transports=("virtio",)))
    assert cfg.virtio.expiration_time == 15
    assert any("expiration_time 4 raised to 15" in w for w in cfg.warnings)


@pytest.mark.parametrize(
    "transports, expected",
    [
        (("VBD",), {"vbd"}),
        (("Virtio",), {"virtio"}),
        (("vbd0", "virtio-serial"), {"vbd", "virtio"}),
        (("nonsense",), {"vbd"}),
        (("xenstore",), {"xenstore"}),
        (("XenStore", "vbd"), {"vbd", "xenstore"}),
    ],
)
def test_transports_match_case_insensitive_prefix(transports, expected):
    cfg = parse(config_xml(metric("A", "echo a"), transports=transports))
    assert cfg.transports == expected


def test_unknown_transports_are_reported():
    cfg = parse(config_xml(metric("A", "echo a"), transports=("carrier-pigeon",)))
    assert any("'carrier-pigeon'" in w for w in cfg.warnings)
    assert any("using vbd" in w for w in cfg.warnings)


def test_xenstore_max_size_defaults_to_xenstoreds_quota_and_is_bounded():
    cfg = parse(config_xml(metric("A", "echo a"), transports=("xenstore",)))
    assert cfg.xenstore.max_size == 2048
    assert not cfg.warnings
    cfg = parse(config_xml(metric("A", "echo a"), transports=("xenstore",),
                           virtio="<xenstore><max_size> 4000 </max_size></xenstore>"))
    assert cfg.xenstore.max_size == 4000
    with pytest.raises(ConfigError, match=r":\d+: xenstore max_size 4069 is over 4068 bytes"):
        parse(config_xml(metric("A", "echo a"), transports=("xenstore",),
                         virtio="<xenstore><max_size>4069</max_size></xenstore>"))
    with pytest.raises(ConfigError, match="max_size 100 is less than 256"):
        parse(config_xml(metric("A", "echo a"), transports=("xenstore",),
                         virtio="<xenstore><max_size>100</max_size></xenstore>"))


@pytest.mark.parametrize(
    "size, expected",
    [
        ('<size unit="k">1</size>', 1024),
        ('<size unit="K">64</size>', 65536),
        ('<size unit="m">1</size>', 1024 * 1024),
        ('<size unit="M">256</size>', 256 * 1024 * 1024),
    ],
)
def test_disk_size_units(size, expected):
    assert parse(config_xml(metric("A", "echo a"), disk=Path("/d"), size=size)).disk.size == expected


@pytest.mark.parametrize(
    "size, message",
    [
        ('<size unit="g">1</size>', "unit 'g' is not k or m"),
        ('<size unit="">1</size>', "unit '' is not k or m"),
        ('<size unit="k">lots</size>', "disk size 'lots' is not an integer"),
        ('<size unit="k">0</size>', "outside 1024..268435456"),
        ('<size unit="m">257</size>', "outside 1024..268435456"),
    ],
)
def test_bad_disk_size_is_an_error_with_its_line(size, message):
    text = config_xml(metric("A", "echo a"), disk=Path("/d"), size=size)
    err = error_of(text)
    assert message in err.message
    assert err.line == 5  # the globals line holding <disk>
    assert str(err).startswith("test.conf:5: ")


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("<vhostmd><globals>", 1, "not well-formed XML"),
        ("<?xml version='1.0'?>\n<other/>", 2, "root element is <other>"),
        ("<vhostmd>\n<globals><transport>vbd</transport></globals>\n<metrics/></vhostmd>", 2,
         "does not match vhostmd.dtd"),
        ("<vhostmd><globals><update_period>5</update_period><transport>vbd</transport></globals>\n"
         "<metrics><metric type='float' context='host'><name>x</name><action>y</action></metric>"
         "</metrics></vhostmd>", 2, "does not match vhostmd.dtd"),
        ("<vhostmd><globals><update_period>5</update_period><transport>vbd</transport></globals>\n"
         "<metrics><metric type='int32' context='guest'><name>x</name><action>y</action></metric>"
         "</metrics></vhostmd>", 2, "does not match vhostmd.dtd"),
    ],
)
def test_malformed_configurations(text, line, message):
    err = error_of(text)
    assert err.line == line
    assert message in err.message


@pytest.mark.parametrize(
    "period, message",
    [("five", "update_period 'five' is not an integer"), ("0", "update_period 0 is less than 1")],
)
def test_bad_update_period(period, message):
    text = config_xml(metric("A", "echo a")).replace("<update_period>1<", f"<update_period>{period}<")
    assert message in error_of(text).message


def test_bad_virtio_settings():
    virtio = ("<virtio><channel_path>/c</channel_path><max_channels>many</max_channels>"
              "<expiration_time>15</expiration_time></virtio>")
    assert "max_channels 'many' is not an integer" in error_of(config_xml(metric("A", "echo a"), virtio=virtio)).message


def test_entity_declarations_are_refused_and_not_expanded():
    text = config_xml(metric("A", "echo &boom;")).replace(
        '<!DOCTYPE vhostmd SYSTEM "vhostmd.dtd">',
        '<!DOCTYPE vhostmd [<!ENTITY boom SYSTEM "file:///etc/shadow">]>',
    ).replace("&amp;boom;", "&boom;")
    err = error_of(text)
    assert "entity declarations are not allowed" in err.message


def test_unknown_builtin_is_an_error_with_its_line():
    text = config_xml('    <metric type="string" context="host">\n<name>X</name>\n<builtin>no-such</builtin></metric>')
    err = error_of(text)
    assert "unknown builtin 'no-such'" in err.message
    assert err.line == 15  # the <builtin> line


def test_metric_timeout_and_action_timeout():
    text = config_xml(metric("A", "echo a", attrs=' timeout="0.5"') + metric("B", "echo b"),
                      extra_globals="<action_timeout>3</action_timeout>", period=60)
    cfg = parse(text)
    assert [m.timeout for m in cfg.metrics] == [0.5, None]
    assert cfg.action_timeout == 3
    assert "timeout 'soon' is not a positive number" in error_of(
        config_xml(metric("A", "echo a", attrs=' timeout="soon"'))).message
    assert "action_timeout '-1'" in error_of(
        config_xml(metric("A", "echo a"), extra_globals="<action_timeout>-1</action_timeout>")).message


def test_unusable_metrics_are_skipped_with_a_warning_and_the_rest_run():
    text = config_xml(
        metric("", "echo a")
        + metric("Empty", "   ")
        + '<metric type="group" context="host"><name>G</name><action>echo 1</action></metric>'
        + metric("Good", "echo ok")
    )
    cfg = parse(text)
    assert [m.name for m in cfg.metrics] == ["Good"]
    assert len(cfg.warnings) == 3
    assert all(w.startswith("test.conf:") for w in cfg.warnings)


def test_group_units_from_list_and_variables():
    text = config_xml(
        '<metric type="group" context="host" unit="KiB,s"><name>G</name><action>echo 1,2,3</action>'
        '<variable name="A" type="uint64"/><variable name="B" type="real64"/>'
        '<variable name="C" type="int32" unit="pages"/></metric>'
    )
    outputs = parse(text).metrics[0].outputs()
    assert [(v.name, v.unit) for v in outputs] == [("A", "KiB"), ("B", "s"), ("C", "pages")]


def test_cli_reports_errors_with_file_and_line_and_creates_nothing(tmp_path):
    disk = tmp_path / "sub" / "vhostmd0"
    conf = tmp_path / "bad.conf"
    conf.write_text(config_xml(metric("A", "echo a"), disk=disk, size='<size unit="k">0</size>'))
    result = vhostmd("--once", "-f", str(conf))
    assert result.returncode == 1
    assert f"{conf}:5: disk size 0 bytes is outside" in result.stderr
    assert not disk.parent.exists()


def test_cli_missing_config_file(tmp_path):
    result = vhostmd("--check", "-f", str(tmp_path / "nope.conf"))
    assert result.returncode == 1
    assert "nope.conf: cannot read configuration" in result.stderr


def test_cli_check_lists_metrics_and_destinations(tmp_path):
    conf = tmp_path / "ok.conf"
    disk = tmp_path / "vhostmd0"
    conf.write_text(config_xml(
        metric("HostName", "hostname") + metric("TotalCPUTime", "echo 1", "real64", "vm"),
        disk=disk, transports=("vbd", "virtio"),
    ))
    result = vhostmd("--check", "-f", str(conf))
    assert result.returncode == 0, result.stderr
    assert f"metrics disk {disk}, 65536 bytes" in result.stdout
    assert "HostName [string] action" in result.stdout
    assert "TotalCPUTime [real64] action" in result.stdout
    assert "virtio: channels under /var/lib/libvirt/qemu/channel/target" in result.stdout
    assert not disk.exists()


def test_help_exits_with_status_2():
    result = vhostmd("-h")
    assert result.returncode == 2
    for flag in ("--verbose", "--no-daemonize", "--connect", "--config", "--pid-file", "--user", "--once", "--check"):
        assert flag in result.stdout
    commands = result.stdout.split("\ncommands")[1].splitlines()[1:]
    listed = {line.split()[0]: line for line in commands if line.strip()}
    assert {"status", "attach", "detach"} <= set(listed)
    assert "virtio channel" in listed["attach"]
    # Every command the command line knows is listed, and each selects itself.
    assert set(listed) == set(cli.SUBCOMMANDS)
    for name in listed:
        assert vhostmd(name, "--help").stdout.startswith(f"usage: vhostmd {name}")


def test_help_lists_a_new_command_by_itself(monkeypatch):
    def frobnicate(argv):
        """Frobnicate the metrics.

        Details that --help leaves out.
        """

    monkeypatch.setitem(cli.SUBCOMMANDS, "frobnicate", frobnicate)
    text = cli.build_parser().format_help()
    assert "  frobnicate  Frobnicate the metrics." in text
    assert "Details" not in text
    assert "{status,check,attach,detach,frobnicate}" in text


def test_output_into_a_reader_that_stops_is_no_traceback(tmp_path):
    # `vhostmd --check | head`: the reader leaves while we still write.
    import subprocess
    import sys

    from support import daemon_env

    conf = tmp_path / "vhostmd.conf"
    conf.write_text(config_xml("".join(metric(f"M{i}", "echo 1") for i in range(3000))))
    proc = subprocess.Popen([sys.executable, "-m", "vhostmd", "--check", "-f", str(conf)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env())
    assert proc.stdout.read(10) == b"configurat"
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
