"""Known deviations whose pattern matches no case of any profile are warned about at collection."""
from __future__ import annotations

import pytest

from harness.pytest_plugin import (KnownDeviation, all_profile_case_ids, load_known_deviations,
                                   unmatched_deviations, warn_unmatched_deviations)


def test_current_file_has_no_stale_entries():
    assert unmatched_deviations(load_known_deviations(), all_profile_case_ids()) == []


def test_unmatched_entry_is_found():
    stale = KnownDeviation(sut="torch", case="^w9_never_", reason="r", link="l")
    live = KnownDeviation(sut="torch", case="^w2_n0.0_", reason="r", link="l")
    ids = {"w2_n0.0_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cpu"}
    assert unmatched_deviations([stale, live], ids) == [stale]


def test_device_filter_counts(tmp_path):
    cpu_id = "w2_n0.0_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cpu"
    cuda_only = KnownDeviation(sut="torch", case="^w2_n0.0_", reason="r", link="l", device="cuda")
    assert unmatched_deviations([cuda_only], {cpu_id}) == [cuda_only]


def test_warning_is_a_pytest_warning(tmp_path):
    path = tmp_path / "known_deviations.toml"
    path.write_text('[[deviation]]\nsut = "torch"\ncase = "^w9_nothing_matches_"\nreason = "r"\nlink = "l"\n')
    with pytest.warns(pytest.PytestWarning, match="matches no case of any profile"):
        unmatched = warn_unmatched_deviations(path)
    assert [d.case for d in unmatched] == ["^w9_nothing_matches_"]
