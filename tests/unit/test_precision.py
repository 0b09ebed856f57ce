"""What the host runs natively, and how ``auto`` becomes one recorded precision per deployment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import ConfigError
from pipeline.features.precision import RECORD_NAME, decide_auto_precision, read_decision
from pipeline.hardware import _capped, cpu_features


@pytest.mark.parametrize(
    ("detected", "cap", "expected"),
    [
        ("avx512_core_amx", "", "avx512_core_amx"),
        ("avx512_core_amx", "ALL", "avx512_core_amx"),
        ("avx512_core_amx", "AVX512_CORE_BF16", "avx512_core_bf16"),
        ("avx512_core_amx", "AVX512_CORE_AMX_FP16", "avx512_core_amx"),
        ("avx512_core_bf16", "AVX512_CORE_AMX", "avx512_core_bf16"),  # a cap never adds
        ("avx512_core_bf16", "avx2", "avx2"),
        ("avx512_core_bf16", "AVX2_VNNI", "avx2"),
        ("avx2", "something-new", "avx2"),
    ],
)
def test_onednn_isa_cap_limits_the_detected_instruction_set(
    detected: str, cap: str, expected: str
) -> None:
    assert _capped(detected, cap) == expected


def test_a_capped_host_has_no_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    host = cpu_features()
    assert host.isa in ("avx2", "avx", "sse41", "generic")
    assert host.bf16_native == (host.gpus > 0)
    assert "emulated" in host.describe() or host.gpus


def test_auto_is_decided_once_and_every_later_process_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = str(tmp_path / "features")
    assert read_decision(root) is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the first host: no bfloat16 hardware
    first = decide_auto_precision(root)
    assert first.precision == ("bfloat16" if cpu_features().gpus else "float32")
    assert first.isa == cpu_features().isa
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")  # another host, however strong, reads the record
    assert decide_auto_precision(root) == first
    settings = load_settings(data_dir=str(tmp_path), cnn_precision="auto", cnn_weights="none")
    assert settings.resolved_precision() == first.precision
    assert settings.stream_settings("video")["precision"] == first.precision
    recorded = json.loads((tmp_path / "features" / RECORD_NAME).read_text())
    assert recorded["precision"] == first.precision and recorded["decided_by"]


def test_an_explicit_precision_decides_nothing(tmp_path: Path) -> None:
    settings = load_settings(data_dir=str(tmp_path), cnn_precision="bfloat16", cnn_weights="none")
    assert settings.settings_hash
    assert not (tmp_path / "features" / RECORD_NAME).exists()


def test_an_unreadable_record_and_an_unwritable_store_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / RECORD_NAME).write_text("{not json")
    with pytest.raises(ValueError, match="delete it"):
        decide_auto_precision(str(tmp_path))
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="PIPELINE_CNN_PRECISION to float32 or bfloat16"):
        decide_auto_precision(str(blocked / "features"))
