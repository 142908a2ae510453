"""Group keys are structured: a group's parts come from a GroupKey, never from splitting its id."""
from __future__ import annotations

from analysis.load import GroupKey, group_keys, keys_by_group_id
from analysis.regression import fit_all


def test_every_group_id_is_the_label_of_a_key_built_from_its_rows(depth_stats):
    frame = depth_stats.frame
    keys = keys_by_group_id(frame)
    assert set(keys) == set(frame["group_id"])
    for group_id, rows in frame.groupby("group_id"):
        key = keys[group_id]
        assert key.label == group_id
        for column in group_keys(key.phase):
            assert (rows[column] == getattr(key, column)).all(), column
        assert (key.gen_len is None) == (key.phase != "e2e")


def test_a_short_label_leaves_out_the_regime_even_when_it_holds_the_separator():
    key = GroupKey("NVIDIA H100 | driver 580 | CUDA 13.0", "hf-eager", "e2e", "bfloat16", 4, 128, 64)
    assert key.short_label == "hf-eager | e2e | bfloat16 | batch 4 | prompt 128 | gen 64"
    assert key.label == f"NVIDIA H100 | driver 580 | CUDA 13.0 | {key.short_label}"
    assert key.as_dict() == {"regime": key.regime, "backend": "hf-eager", "phase": "e2e", "dtype": "bfloat16",
                             "batch_size": 4, "prompt_len": 128, "family": "gpt2", "gen_len": 64}
    assert "gen_len" not in GroupKey.of({**key.as_dict(), "phase": "decode"}).as_dict()


def test_a_fit_carries_its_key_and_a_verdict_lead_without_the_per_scale_details(depth_stats):
    keys = keys_by_group_id(depth_stats.frame)
    for fit in fit_all(depth_stats.frame):
        assert fit.key == keys[fit.group_id]
        details = "; ".join(v["detail"] for v in fit.verdicts.values())
        assert fit.verdict["text"] == f"{fit.verdict['lead']}: {details}"
        assert "linear scale:" not in fit.verdict["lead"]
