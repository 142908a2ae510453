"""Messages that say what is wrong, in one line: checkpoint configs a plan cannot use, a plan
of hub models checked offline, and where a run that was not ingested should be ingested."""
from __future__ import annotations

import json

import duckdb
import pytest

from runner.plan import PlanError, expand, parse_plan
from tests.runner.helpers import plan_dict, run_cli, write_plan

GPT2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 64, "n_head": 2, "vocab_size": 1024, "n_positions": 128}


def checkpoint(tmp_path, config_text: str):
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text(config_text)
    (path / "model.safetensors").write_bytes(b"")  # the shape is read from config.json only
    return path


@pytest.mark.parametrize(("config", "expected"), [
    (json.dumps({k: v for k, v in GPT2.items() if k != "n_layer"}), "config.json lacks 'n_layer'"),
    ('{"model_type": "gpt2", "n_layer": ', "Expecting value"),
    (json.dumps(GPT2 | {"n_layer": 10**6}), "n_layer: Input should be less than or equal to 512"),
    (json.dumps(GPT2 | {"model_type": "mistral"}), "model_type 'mistral' is not one of gpt2, llama, qwen2"),
    (json.dumps(GPT2 | {"model_type": "llama"}), "config.json lacks 'hidden_size'"),
    (json.dumps(GPT2 | {"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}), "auto_map asks for remote code"),
    (json.dumps([GPT2]), "config.json is not a JSON object"),
    (json.dumps(GPT2 | {"n_embd": 100, "n_head": 3}), "must be divisible by n_head"),
])
def test_a_checkpoint_config_the_plan_cannot_use_is_one_line_naming_it(tmp_path, config, expected):
    path = checkpoint(tmp_path, config)
    plan = parse_plan(plan_dict(models={"checkpoints": [str(path)]}))
    with pytest.raises(PlanError) as info:
        expand(plan)
    message = str(info.value)
    assert message.startswith(f"models.checkpoints: '{path}': ") and expected in message and "\n" not in message


def test_a_missing_checkpoint_directory_is_one_line(tmp_path):
    plan = parse_plan(plan_dict(models={"checkpoints": [str(tmp_path / "nowhere")]}))
    with pytest.raises(PlanError, match=r"^models\.checkpoints: '.*nowhere': .*not a directory with a config\.json$"):
        expand(plan)


def test_cli_plan_with_a_bad_checkpoint_is_one_line(tmp_path):
    path = checkpoint(tmp_path, json.dumps({k: v for k, v in GPT2.items() if k != "n_head"}))
    done = run_cli("plan", write_plan(tmp_path / "plan.toml", models={"checkpoints": [str(path)]}))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: models.checkpoints: '{path}': config.json lacks 'n_head'"]


def test_cli_plan_of_hub_models_offline_does_not_say_there_is_no_model(tmp_path):
    plan = write_plan(tmp_path / "plan.toml", models={"hub": ["someone/gpt2-unknown"]})
    done = run_cli("plan", plan)  # HF_HUB_OFFLINE=1: nothing is resolved by `plan`
    assert done.returncode == 0, done.stderr
    assert "names no model" not in done.stdout + done.stderr
    assert "hub models, read when the run starts (not counted above): someone/gpt2-unknown" in done.stdout


def test_a_run_in_another_folder_that_was_not_ingested_says_how_to_ingest_it(tmp_path):
    foreign = tmp_path / "other.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    models = {"custom": plan_dict()["models"]["custom"][:1]}
    plan = write_plan(tmp_path / "plan.toml", models=models, backends=["hf-eager"], gen_lens=[2])
    done = run_cli("run", plan, "--runs-dir", tmp_path / "elsewhere", "--db", foreign)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("not ingested: ")]
    assert "no shapebench schema" in line and "python -m runner ingest " in line
    assert "not this folder" in line and "the dashboard (watching" not in line
