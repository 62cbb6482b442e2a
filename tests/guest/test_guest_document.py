from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import given, strategies as st

from vhostmd_guest import (
    AmbiguousMetricError,
    DocumentError,
    MetricNotFoundError,
    MetricValueError,
    convert_value,
    mdisk,
    parse_document,
)
from vhostmd_guest.groups import CpuMetrics, MemoryMetrics, cpu_metrics, memory_metrics

from guest_vectors import DOC, reference


def ten_vms():
    return parse_document(mdisk.decode_image(reference("c-vhostmd-10vms.disk").read_bytes()))


def test_reference_disk_parses():
    doc = ten_vms()
    assert len(doc.host_metrics()) == 12
    assert len(doc.uuids()) == 10
    assert len(doc.vm_metrics()) == 10
    assert doc.value("TotalCPUTime") == pytest.approx(148.77)
    assert doc.get("TotalCPUTime").unit == "s"
    assert doc.value("NumCPUs") == 16
    assert doc.value("PageInRate") == 0  # written as 0.000000 for a uint64
    assert doc.value("HostName") == "vm"


def test_vm_lookup_by_uuid():
    doc = ten_vms()
    uuid = "4dea22b3-1d52-d8f3-2516-782e98ab0007"
    metric = doc.get("TotalCPUTime", "vm", uuid)
    assert metric.uuid == uuid and metric.id is not None
    assert isinstance(metric.value, float)
    assert doc.get("TotalCPUTime", "VM", uuid.upper()) == metric
    with pytest.raises(AmbiguousMetricError, match="10 VMs"):
        doc.get("TotalCPUTime", "vm")
    with pytest.raises(MetricNotFoundError, match="NoSuch"):
        doc.get("NoSuch")
    with pytest.raises(MetricNotFoundError):
        doc.get("TotalCPUTime", "vm", "00000000-0000-0000-0000-000000000000")


def test_virtio_answer_parses_with_a_single_vm():
    doc = parse_document(reference("c-vhostmd-virtio-answer.txt").read_bytes())
    assert len(doc.uuids()) == 1
    assert isinstance(doc.value("TotalCPUTime", "vm"), float)


def test_unescaped_reference_content_fails_cleanly():
    content = mdisk.decode_image(reference("c-vhostmd-unescaped.disk").read_bytes())
    with pytest.raises(DocumentError, match=r"not well-formed XML.*line \d+, column \d+"):
        parse_document(content)


def test_metric_fields_and_json_dict():
    doc = parse_document(DOC)
    host, vm = list(doc)
    assert host.to_dict() == {
        "name": "NumCPUs", "context": "host", "type": "uint32", "value": 4, "unit": None,
    }
    assert vm.to_dict() == {
        "name": "TotalCPUTime", "context": "vm", "type": "real64", "value": 69.4, "unit": "s",
        "id": 3, "uuid": "6be3fdb8-bef5-6fec-b1b7-e61bbceab708",
    }


@pytest.mark.parametrize(
    "kind, text, value",
    [
        ("int32", "-2147483648", -(2 ** 31)),
        ("uint32", " 4294967295\n", 2 ** 32 - 1),
        ("int64", "9223372036854775807", 2 ** 63 - 1),
        ("uint64", "18446744073709551615", 2 ** 64 - 1),
        ("uint64", "12.9", 12),
        ("real32", "1.5", 1.5),
        ("real64", "696.100000\n", 696.1),
        ("string", "TEST 0.0.2\n", "TEST 0.0.2"),
        ("STRING", "x", "x"),
    ],
)
def test_convert_value(kind, text, value):
    assert convert_value(kind, text) == value


@pytest.mark.parametrize(
    "kind, text",
    [
        ("int32", "2147483648"),
        ("uint32", "-1"),
        ("uint64", "18446744073709551616"),
        ("int64", "abc"),
        ("real64", ""),
        ("real64", "1_0"),
        ("bogus", "1"),
    ],
)
def test_convert_value_errors(kind, text):
    with pytest.raises(MetricValueError):
        convert_value(kind, text)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not well-formed"),
        (b"<metrics>", "not well-formed"),
        (b"<other/>", "root element"),
        (b"<metrics><metric context='host'><name>a</name><value>1</value></metric></metrics>",
         "no type"),
        (b"<metrics><metric type='string' context='host'><value>1</value></metric></metrics>",
         "no <name>"),
        (b"<!DOCTYPE metrics [<!ENTITY a 'b'>]><metrics/>", "type declarations"),
    ],
)
def test_bad_documents(data, message):
    with pytest.raises(DocumentError, match=message):
        parse_document(data)


def test_comments_are_ignored():
    doc = parse_document(b"<metrics>\n<!-- host metrics not available -->\n</metrics>\n\n")
    assert len(doc) == 0


def test_grouped_reads_use_the_libmetrics_names():
    doc = ten_vms()
    mem = memory_metrics(doc)
    assert isinstance(mem, MemoryMetrics)
    assert mem.total_physical_memory == doc.value("TotalPhyMem")
    assert mem.used_physical_memory == doc.value("UsedMem")
    assert mem.free_physical_memory == doc.value("FreeMem")
    assert mem.paged_in_memory == doc.value("PagedInMemory")
    assert mem.paged_out_memory == doc.value("PagedOutMemory")
    assert (mem.page_in_rate, mem.page_fault_rate) == (0, 0)
    cpu = cpu_metrics(doc)
    assert cpu == CpuMetrics(16, 16, pytest.approx(148.77))
    uuid = doc.uuids()[0]
    vm_cpu = cpu_metrics(doc, "vm", uuid)
    assert vm_cpu.total_cpu_time == doc.value("TotalCPUTime", "vm", uuid)
    assert vm_cpu.total_phys_cpus is None
    assert memory_metrics(doc, "vm", uuid) == MemoryMetrics(*[None] * 7)


# -- round trip through a writer of the test's own -------------------------

xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
    max_size=20,
)
metric_records = st.builds(
    dict,
    name=xml_text.map(str.strip).filter(bool),
    type=st.sampled_from(["int32", "uint32", "int64", "uint64", "real32", "real64", "string"]),
    text=xml_text,
    unit=st.none() | xml_text,
    vm=st.none() | st.tuples(st.integers(0, 2 ** 31), st.uuids().map(str)),
)


def write_document(records):
    out = ["<metrics>\n"]
    for r in records:
        attrs = " type={} context={}".format(quoteattr(r["type"]),
                                             quoteattr("vm" if r["vm"] else "host"))
        if r["vm"]:
            attrs += " id='{}' uuid='{}'".format(*r["vm"])
        if r["unit"] is not None:
            attrs += " unit={}".format(quoteattr(r["unit"]))
        out.append("  <metric{}>\n    <name>{}</name>\n    <value>{}</value>\n  </metric>\n"
                   .format(attrs, escape(r["name"]), escape(r["text"])))
    out.append("</metrics>\n")
    return "".join(out).encode("utf-8")


@given(st.lists(metric_records, max_size=8))
def test_parse_round_trip(records):
    doc = parse_document(write_document(records))
    assert len(doc) == len(records)
    for metric, r in zip(doc, records):
        assert metric.name == r["name"]
        assert metric.type == r["type"]
        assert metric.text == r["text"]
        assert metric.unit == r["unit"]
        assert metric.context == ("vm" if r["vm"] else "host")
        assert (metric.id, metric.uuid) == (r["vm"] or (None, None))
