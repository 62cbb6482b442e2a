"""Every example in README.md and docs/guest.md runs as written, against the config it names.

See docs_examples for how an example names its configuration and how it is run.
"""

import subprocess
import sys

import pytest

from vhostmd_guest import DiskReader, SourceOptions, read_document

from docs_examples import GUEST_DIR, ROOT, examples, loop_device, published_disk, run_in_guest
from test_guest_package import python36

EXAMPLES = [e for e in examples() if e.config]


def test_every_python_example_names_an_existing_configuration():
    python = [e for e in examples() if e.language == "python"]
    assert python, "no Python examples found: has the documentation moved?"
    for example in python:
        assert example.config, "{}: no '<!-- example: CONFIG -->' line above it".format(
            example.where)
    for example in EXAMPLES:
        assert (ROOT / example.config).is_file(), "{}: no configuration {}".format(
            example.where, example.config)


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    made = {}

    def disk(config):
        if config not in made:
            made[config] = published_disk(config, tmp_path_factory.mktemp("published"))
        return made[config]

    return disk


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_example_runs(example, disks, tmp_path):
    result = run_in_guest(example, disks(example.config), env={"TEXTFILE_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    # A grouped read against the wrong metric set prints None: no example may.
    assert "None" not in result.stdout, result.stdout
    if example.language == "python":
        assert result.stdout.strip(), "the example printed nothing"
    if "--format prometheus" in example.code:
        # The textfile recipe: one finished file, no temporary file left behind.
        assert [p.name for p in tmp_path.iterdir()] == ["vhostmd.prom"]
        prom = tmp_path / "vhostmd.prom"
        assert prom.stat().st_mode & 0o777 == 0o644
        parser = pytest.importorskip("prometheus_client.parser")
        families = {f.name: f for f in parser.text_string_to_metric_families(prom.read_text())}
        names = {s.labels["name"] for s in families["vhostmd_metric"].samples}
        assert {"NumberOfPhysicalCPUs", "ResourceMemoryLimit"} <= names


def test_python_examples_run_on_python_3_6(disks):
    """The guest package supports Python 3.6 (RHEL 8, SLES 15): so do its examples."""
    exe = python36()
    for example in EXAMPLES:
        if example.language != "python":
            continue
        result = run_in_guest(example, disks(example.config), python=exe)
        assert result.returncode == 0 and result.stderr == "", (example.where, result.stderr)


def test_textfile_recipe_keeps_the_old_file_when_no_source_works(disks, tmp_path):
    (recipe,) = [e for e in EXAMPLES if "--format prometheus" in e.code]
    old = tmp_path / "vhostmd.prom"
    old.write_text("# the last good one\n")
    result = run_in_guest(recipe, disks(recipe.config), attach=False,
                          env={"TEXTFILE_DIR": str(tmp_path)})
    assert result.returncode != 0 and "no metrics disk" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["vhostmd.prom"]
    assert old.read_text() == "# the last good one\n"


def test_sample_expositions_in_the_docs_parse():
    parser = pytest.importorskip("prometheus_client.parser")
    samples = [e for e in examples() if e.language == "text" and e.code.startswith("# HELP")]
    assert samples, "docs/guest.md shows no --format prometheus output"
    for sample in samples:
        families = list(parser.text_string_to_metric_families(sample.code))
        assert {f.name for f in families} == {"vhostmd_metric", "vhostmd_metric_info"}, sample.where


def test_library_and_tool_read_a_named_device_and_a_file(disks):
    """Pointed at a path, nothing is scanned: a block device and a plain file both work."""
    disk = disks("conf/vhostmd.conf")
    device = loop_device(disk.path)
    try:
        for path in (device, str(disk.path)):
            # A /sys/block that lists nothing proves the path alone was used.
            options = SourceOptions(device=path, sys_block="/nonexistent")
            assert read_document(("disk",), options).value("ResourceMemoryLimit", "vm") == 8192
            reader = DiskReader(path, sys_block="/nonexistent")
            assert reader.path == path and reader.sap_vm(disk.uuid).resource_processor_limit == 2
            tool = subprocess.run(
                [sys.executable, "-m", "vhostmd_guest", "-b", "--device", path,
                 "--format", "prometheus"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                env={"PYTHONPATH": str(GUEST_DIR), "PATH": "/usr/bin:/bin"})
            assert tool.returncode == 0, tool.stderr
            assert b'name="ResourceMemoryLimit",context="vm"' in tool.stdout
    finally:
        subprocess.run(["losetup", "--detach", device], timeout=30)
