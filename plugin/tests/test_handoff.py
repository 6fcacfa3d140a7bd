"""A training that finishes on a real server lands in an A1111-style Lora folder: file, preview, card JSON."""

import hashlib
import json
import os
import time

import pytest

from conftest import png_bytes
from lora_scripts_ext.client import DatasetImage, LoraScriptsError
from lora_scripts_ext.handoff import activation_text, install_lora, sd_version
from lora_scripts_ext.watcher import STATE_FILE, TrainingWatcher


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def train_tiny(client, name):
    images = [DatasetImage(png_bytes(64, 64, (40 * i, 200 - 30 * i, 90)), f"a {c} square, flat", f"img{i}.png") for i, c in enumerate(["red", "green", "blue", "grey"])]
    client.add_images(f"ds-{name}", images)
    r = client.session.post(
        client.base_url + "/sdapi/v1/train/jobs",
        json={
            "train_data_dir": f"datasets/ds-{name}", "output_name": name, "lora_rank": 2, "lora_alpha": 2, "resolution": 64,
            "enable_bucket": False, "batch_size": 2, "epochs": 1, "learning_rate": 1e-3, "seed": 1, "save_every_n_epochs": 0,
            "sample_prompts": [{"prompt": "a red square", "steps": 2, "seed": 1}], "sample_every_n_steps": 2,
        },
        timeout=60,
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.time() + 240
    while time.time() < deadline:
        job = client.job(job_id)
        if job["status"] in ("done", "failed", "cancelled"):
            assert job["status"] == "done", job.get("error")
            return job
        time.sleep(0.5)
    pytest.fail("training did not finish in 240 s")


def test_finished_training_is_handed_to_a1111_once(server, client, tmp_path):
    job = train_tiny(client, "tiny-handoff")
    lora_dir = tmp_path / "models" / "Lora"
    got, logs = [], []
    watcher = TrainingWatcher(lambda: client, str(lora_dir), on_installed=got.append, log=logs.append)
    installed = watcher.poll_once()
    assert [i.name for i in installed] == ["tiny-handoff"] and got == installed
    dest = lora_dir / "tiny-handoff.safetensors"
    assert sha(dest) == sha(job["lora"]), "the file A1111 lists is the server's LoRA, byte for byte"
    card = json.loads((lora_dir / "tiny-handoff.json").read_text())
    assert card["sd version"] == "SD1"
    assert set(card) >= {"description", "sd version", "activation text", "preferred weight", "notes"}
    assert card["activation text"], "the training captions' tags become the activation text"
    job_detail = client.job(job["id"])
    assert job_detail["outputs"]["samples"], "the run renders its sample prompt"
    # The card image is the run's last sample, as the server wrote it beside the LoRA.
    with open(job_detail["outputs"]["samples"][-1]["path"], "rb") as f:
        assert (lora_dir / "tiny-handoff.preview.png").read_bytes() == f.read()
    assert any("<lora:tiny-handoff:0.8>" in m for m in logs)
    # Remembered: a LoRA the user deletes in A1111 does not come back at the next poll.
    assert job["id"] in json.loads((lora_dir / STATE_FILE).read_text())["jobs"]
    dest.unlink()
    assert watcher.poll_once() == [] and not dest.exists()
    # No temp files are left where A1111 scans for LoRAs.
    assert sorted(p.name for p in lora_dir.iterdir() if p.name.startswith(".") and p.name != STATE_FILE) == []


def test_install_refuses_to_overwrite_a_different_file(server, client, tmp_path):
    name = client.loras()[0]["name"]
    lora_dir = tmp_path / "Lora"
    lora_dir.mkdir()
    (lora_dir / f"{name}.safetensors").write_bytes(b"someone else's LoRA")
    with pytest.raises(LoraScriptsError, match="already exists and differs"):
        install_lora(client, name, str(lora_dir))
    assert (lora_dir / f"{name}.safetensors").read_bytes() == b"someone else's LoRA"
    again = install_lora(client, name, str(lora_dir), overwrite=True)
    assert again.replaced and not again.unchanged
    same = install_lora(client, name, str(lora_dir))
    assert same.unchanged
    with pytest.raises(LoraScriptsError, match="not a plain file name"):
        install_lora(client, "../escape", str(lora_dir))


def test_watcher_reports_an_unreachable_server_once(tmp_path):
    from conftest import free_port
    from lora_scripts_ext.client import Client

    logs = []
    w = TrainingWatcher(lambda: Client(f"http://127.0.0.1:{free_port()}", timeout=1), str(tmp_path), log=logs.append)
    w.client_factory = (lambda c: (lambda: c))(Client(f"http://127.0.0.1:{free_port()}", timeout=1))
    assert w.poll_once() == [] and w.poll_once() == []
    assert len(logs) == 1 and "unreachable" in logs[0]


def test_card_metadata_rules():
    assert sd_version({"ss_base_model_version": "sdxl_base_v1-0"}) == "SDXL"
    assert sd_version({"ss_v2": "True"}) == "SD2"
    assert sd_version({}) == "Unknown"
    freq = json.dumps({"1_cat": {"cat": 4, "sofa": 2, "red": 3}, "2_x": {"cat": 1}})
    assert activation_text({"ss_tag_frequency": freq}) == "cat, red, sofa"
