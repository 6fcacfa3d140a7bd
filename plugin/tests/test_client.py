import os

import pytest

from conftest import free_port, png_bytes
from lora_scripts_ext.client import Client, DatasetImage, LoraScriptsError
from lora_scripts_ext.sender import caption_from_prompt, selection_captions, send_to_dataset


def test_unreachable_server_names_url_and_the_command():
    port = free_port()
    c = Client(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(LoraScriptsError) as e:
        c.ping()
    msg = str(e.value)
    assert f"http://127.0.0.1:{port}" in msg and "unreachable" in msg
    assert f"lora-scripts serve --port {port}" in msg


def test_bad_url_is_refused():
    with pytest.raises(LoraScriptsError, match="must start with http"):
        Client("localhost:7861")


def test_credentials(auth_server):
    with pytest.raises(LoraScriptsError, match="refused the credentials"):
        Client(auth_server.url).jobs()
    with pytest.raises(LoraScriptsError, match="refused the credentials"):
        Client(auth_server.url, "alice", "wrong").jobs()
    assert Client(auth_server.url, "alice", "secret").jobs() == []


def test_server_errors_carry_the_servers_detail(client):
    with pytest.raises(LoraScriptsError) as e:
        client.job("no-such-job")
    assert "HTTP 404" in str(e.value) and "no-such-job" in str(e.value)


def test_add_images_writes_dataset_with_captions(server, client):
    res = client.add_images("from-client", [DatasetImage(png_bytes(8, 8, (255, 0, 0)), "a red square", "red.png"), DatasetImage(png_bytes(8, 8, (0, 0, 255)))])
    assert res["added"][0] == "red.png" and len(res["added"]) == 2
    folder = os.path.join(server.data, "datasets", "from-client")
    with open(os.path.join(folder, "red.png"), "rb") as f:
        assert f.read() == png_bytes(8, 8, (255, 0, 0))
    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8") as f:
        assert f.read().splitlines() == ["file_name,caption", "red.png,a red square"]
    names = [d["name"] for d in client.datasets()]
    assert "from-client" in names


def test_captions_from_a1111_generation_info():
    assert caption_from_prompt("masterpiece, <lora:style_a:0.8> cat ,, on a sofa <lyco:x:1>") == "masterpiece, cat, on a sofa"
    info = '{"all_prompts": ["a cat <lora:x:1>", "a dog"], "index_of_first_image": 1}'
    # A1111 puts the grid first when it made one; it takes the first prompt.
    assert selection_captions(info, 3) == ["a cat", "a cat", "a dog"]
    assert selection_captions(None, 1) == [""]


def test_send_selected_gallery_image(server, client, tmp_path):
    paths = []
    for i, rgb in enumerate([(10, 20, 30), (200, 100, 0)]):
        p = tmp_path / f"0000{i}-123.png"
        p.write_bytes(png_bytes(8, 8, rgb))
        paths.append(str(p))
    gallery = [{"name": paths[0], "data": None, "is_file": True}, paths[1]]
    info = '{"all_prompts": ["first prompt", "second prompt, <lora:demo:0.5>"], "index_of_first_image": 0}'
    res = send_to_dataset(client, "sent", gallery, info, selected=1)
    assert res["sent"] == ["00001-123.png"]
    folder = os.path.join(server.data, "datasets", "sent")
    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert len(lines) == 2 and lines[1].endswith(",second prompt")
    res_all = send_to_dataset(client, "sent-all", gallery, info, selected=None)
    assert len(res_all["added"]) == 2
    with pytest.raises(ValueError, match="gallery is empty"):
        send_to_dataset(client, "sent", [], info)
