"""Memory and utilisation readings. Host readings run for real; this machine has no GPU or NPU,
so the smi parsers are tested on sample outputs in tests/data/accelerator_tools/, and
read_accelerators on stand-in `nvidia-smi` / `npu-smi` programs that print them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from babyllama.devices import (
    AcceleratorReading,
    host_memory_mb,
    parse_npu_smi,
    parse_nvidia_smi,
    process_rss_mb,
    read_accelerators,
)

# Written by hand after the tools' documented layouts (tests/data/accelerator_tools/README.md).
SAMPLES = Path(__file__).parent / "data" / "accelerator_tools"
NVIDIA_SMI_SAMPLE = (SAMPLES / "nvidia-smi.csv").read_text()
NPU_SMI_910B_SAMPLE = (SAMPLES / "npu-smi-910b.txt").read_text()
NPU_SMI_310P_SAMPLE = (SAMPLES / "npu-smi-310p.txt").read_text()


def test_process_rss_includes_children():
    allocation = 200 * 2**20
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys, time; b = b'x' * {allocation}; print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        alone = process_rss_mb(include_children=False)
        with_children = process_rss_mb()
        assert alone == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.1)
        assert with_children - alone >= 200
        assert process_rss_mb(child.pid) >= 200
    finally:
        child.kill()
        child.wait()


def test_host_memory_readings_are_sane():
    used, total = host_memory_mb()
    assert 0 < used <= total
    assert total == pytest.approx(psutil.virtual_memory().total / 2**20, abs=0.1)


def memory_row_in_fresh_process(preamble: str) -> str:
    probe = f"{preamble}\nimport json, sys\nfrom babyllama.devices import memory_row\nrow = memory_row()\n" \
            "print(json.dumps({'row': row, 'mindspore': 'mindspore' in sys.modules}))"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "GLOG_v": "3"}, timeout=120).stdout.splitlines()[-1]


def test_memory_row_never_loads_mindspore_into_a_light_process():
    import json

    result = json.loads(memory_row_in_fresh_process(""))
    assert result["mindspore"] is False
    row = result["row"]
    assert set(row) == {"rss_mb", "host_used_mb", "host_total_mb", "device"}
    assert row["device"] == "cpu" and 0 < row["rss_mb"] < row["host_used_mb"] <= row["host_total_mb"]


def test_memory_row_in_a_mindspore_process_on_the_cpu():
    import json

    row = json.loads(memory_row_in_fresh_process("import mindspore"))["row"]
    assert row["device"] == "cpu"
    assert "device_alloc_mb" not in row  # MindSpore reports 0 on the CPU; host RSS is the reading
    assert row["rss_mb"] > 100  # MindSpore itself takes a few hundred MiB


def test_parse_nvidia_smi_sample():
    assert parse_nvidia_smi(NVIDIA_SMI_SAMPLE) == [
        AcceleratorReading("gpu", 0, 0, "NVIDIA A100-SXM4-40GB", 1843.0, 40960.0, 37.0),
        AcceleratorReading("gpu", 1, 0, "NVIDIA A100-SXM4-40GB", 5.0, 40960.0, 0.0),
        AcceleratorReading("gpu", 2, 0, "NVIDIA GeForce RTX 3090", None, 24576.0, None),
    ]
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == []


def test_parse_npu_smi_910b_sample_reads_hbm():
    assert parse_npu_smi(NPU_SMI_910B_SAMPLE) == [
        AcceleratorReading("npu", 0, 0, "910B3", 3395.0, 65536.0, 12.0),
        AcceleratorReading("npu", 1, 0, "910B3", 3394.0, 65536.0, 0.0),
    ]


def test_parse_npu_smi_310p_sample_reads_memory_usage_per_chip():
    assert parse_npu_smi(NPU_SMI_310P_SAMPLE) == [
        AcceleratorReading("npu", 8, 0, "310P3", 1782.0, 21527.0, 0.0),
        AcceleratorReading("npu", 8, 1, "310P3", 1650.0, 21527.0, None),
    ]
    assert parse_npu_smi("npu-smi: command failed") == []


def write_tool(folder: Path, name: str, output: str) -> None:
    sample = folder / f"{name}.out"
    sample.write_text(output)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nexec /bin/cat '{sample}'\n")
    tool.chmod(0o755)


def test_read_accelerators_runs_the_tools_found_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_accelerators() == []
    write_tool(tmp_path, "nvidia-smi", NVIDIA_SMI_SAMPLE)
    write_tool(tmp_path, "npu-smi", NPU_SMI_910B_SAMPLE)
    readings = read_accelerators()
    assert [(r.kind, r.index) for r in readings] == [("gpu", 0), ("gpu", 1), ("gpu", 2), ("npu", 0), ("npu", 1)]


def test_read_accelerators_ignores_a_failing_tool(tmp_path, monkeypatch):
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\necho 'No devices were found' >&2\nexit 6\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert read_accelerators() == []
