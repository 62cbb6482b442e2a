"""Selecting built-ins in the configuration, and the errors a bad choice gets."""

from __future__ import annotations

import pytest

from vhostmd.collect import builtins

from vhostmd import config as config_mod
from vhostmd.config import ConfigError

HEAD = b"""<?xml version="1.0"?>
<vhostmd>
  <globals>
    <update_period>5</update_period>
    <transport>vbd</transport>
  </globals>
  <metrics>
"""
TAIL = b"""  </metrics>
</vhostmd>
"""


def parse(metrics: str):
    return config_mod.parse(HEAD + metrics.encode() + TAIL, "test.conf")


def test_builtin_and_action_metrics_mix():
    config = parse("""    <metric type="uint32" context="host"><name>N</name><builtin>host.cpus</builtin></metric>
    <metric type="string" context="host"><name>A</name><action>echo a</action></metric>
""")
    assert [(m.name, m.builtin, m.action) for m in config.metrics] == [
        ("N", "host.cpus", None), ("A", None, "echo a")]


def test_unknown_builtin_is_an_error_with_file_and_line():
    with pytest.raises(ConfigError) as err:
        parse("""    <metric type="uint32" context="host">
      <name>N</name>
      <builtin>host.nonesuch</builtin>
    </metric>
""")
    assert str(err.value).startswith("test.conf:10: ")
    assert "host.nonesuch" in str(err.value)


def test_builtin_of_the_wrong_context_is_an_error():
    with pytest.raises(ConfigError, match="vm.vcpus.*is a vm metric.*context 'host'"):
        parse("""    <metric type="uint32" context="host"><name>N</name><builtin>vm.vcpus</builtin></metric>\n""")


def test_builtin_of_the_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="real value; type uint64"):
        parse("""    <metric type="uint64" context="host"><name>T</name><builtin>host.cpu_time_s</builtin></metric>\n""")
    with pytest.raises(ConfigError, match="string value; type uint32"):
        parse("""    <metric type="uint32" context="host"><name>H</name><builtin>host.name</builtin></metric>\n""")


def test_group_builtin_needs_as_many_variables_as_values():
    with pytest.raises(ConfigError, match="gives 2 value"):
        parse("""    <metric type="group" context="host"><name>R</name><builtin>host.page_rates</builtin>
      <variable name="PageInRate" type="uint64"/></metric>\n""")


def test_every_builtin_is_documented():
    text = (config_mod.dtd_path().parent.parent / "docs" / "builtins.md").read_text()
    for name, spec in builtins.REGISTRY.items():
        assert f"`{name}`" in text, name
        assert spec.doc and spec.context in ("host", "vm")
