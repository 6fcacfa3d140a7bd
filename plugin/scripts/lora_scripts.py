"""AUTOMATIC1111 / Forge entry point of the lora-scripts extension.

Only wiring lives here (settings, the tab, the gallery button, the background hand-off); the work is in
lora_scripts_ext/, which has no A1111 or Gradio imports and is tested against a real server. Nothing here
talks to the network while A1111 starts: the watcher runs in a daemon thread after the app is up.
"""

import os
import sys

import gradio as gr

from modules import script_callbacks, shared

_EXT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _EXT_DIR not in sys.path:
    sys.path.insert(0, _EXT_DIR)

from lora_scripts_ext import DEFAULT_URL  # noqa: E402
from lora_scripts_ext.client import Client, LoraScriptsError  # noqa: E402
from lora_scripts_ext.sender import send_to_dataset  # noqa: E402
from lora_scripts_ext.tab import tab_html  # noqa: E402
from lora_scripts_ext.watcher import TrainingWatcher  # noqa: E402

SECTION = ("lora_scripts", "lora-scripts")
_watcher = None
_gallery = {}


def _opt(name, default):
    return getattr(shared.opts, name, default) if hasattr(shared, "opts") else default


def _client():
    return Client(_opt("lora_scripts_url", DEFAULT_URL), _opt("lora_scripts_user", ""), _opt("lora_scripts_password", ""))


def _lora_dir():
    # The built-in Lora extension adds --lora-dir; its default is models/Lora.
    d = getattr(shared.cmd_opts, "lora_dir", None)
    if d:
        return d
    from modules import paths

    return os.path.join(paths.models_path, "Lora")


def _refresh_a1111_loras(_installed):
    try:
        import networks  # extensions-builtin/Lora

        networks.list_available_networks()
    except Exception as e:  # Forge renamed modules; a manual refresh in the Lora tab still works.
        print(f"[lora-scripts] LoRA copied; press refresh in A1111's Lora tab to list it ({e})")


def on_ui_settings():
    opt = shared.OptionInfo
    shared.opts.add_option("lora_scripts_url", opt(DEFAULT_URL, "lora-scripts server URL (run `lora-scripts serve --port 7861` beside A1111)", section=SECTION))
    shared.opts.add_option("lora_scripts_user", opt("", "lora-scripts --api-auth user (empty: no auth)", section=SECTION))
    shared.opts.add_option("lora_scripts_password", opt("", "lora-scripts --api-auth password", gr.Textbox, {"type": "password"}, section=SECTION))
    shared.opts.add_option("lora_scripts_dataset", opt("from-a1111", "Dataset that 'Send to lora-scripts dataset' adds images to", section=SECTION))
    shared.opts.add_option("lora_scripts_auto_import", opt(True, "Copy LoRAs of finished trainings into A1111's Lora folder", section=SECTION))
    shared.opts.add_option("lora_scripts_poll_seconds", opt(10, "Seconds between checks for finished trainings", gr.Slider, {"minimum": 2, "maximum": 120, "step": 1}, section=SECTION))


def on_ui_tabs():
    with gr.Blocks(analytics_enabled=False) as tab:
        gr.HTML(tab_html(_opt("lora_scripts_url", DEFAULT_URL)))
    return [(tab, "LoRA training", "lora_scripts")]


def _send(tabname):
    def run(gallery, generation_info, selected):
        try:
            index = int(selected) if selected is not None and int(selected) >= 0 else None
            res = send_to_dataset(_client(), _opt("lora_scripts_dataset", "from-a1111"), gallery or [], generation_info, index)
            msg = f"Sent {len(res['sent'])} image(s) to lora-scripts dataset '{res['dataset']}'"
        except (LoraScriptsError, ValueError, OSError) as e:
            msg = f"lora-scripts: {e}"
        print(f"[lora-scripts] {msg}")
        try:
            gr.Info(msg)
        except Exception:
            pass
        return msg

    return run


def on_after_component(component, **kwargs):
    elem_id = kwargs.get("elem_id")
    for tab in ("txt2img", "img2img"):
        if elem_id == f"{tab}_gallery":
            _gallery[(tab, "gallery")] = component
        elif elem_id == f"generation_info_{tab}":
            _gallery[(tab, "info")] = component
        else:
            continue
        if (tab, "gallery") in _gallery and (tab, "info") in _gallery and (tab, "button") not in _gallery:
            # Hidden: javascript/lora_scripts.js puts a visible button in the image button row and clicks this one.
            button = gr.Button("Send to lora-scripts dataset", visible=False, elem_id=f"lora_scripts_send_{tab}")
            selected = gr.Number(value=-1, visible=False, elem_id=f"lora_scripts_selected_{tab}")
            status = gr.Textbox(visible=False, elem_id=f"lora_scripts_status_{tab}")
            button.click(
                fn=_send(tab),
                _js="(g, i, s) => [g, i, (typeof selected_gallery_index === 'function') ? selected_gallery_index() : -1]",
                inputs=[_gallery[(tab, "gallery")], _gallery[(tab, "info")], selected],
                outputs=[status],
            )
            _gallery[(tab, "button")] = button


def on_app_started(_demo, _app):
    global _watcher
    if not _opt("lora_scripts_auto_import", True) or _watcher is not None:
        return
    _watcher = TrainingWatcher(_client, _lora_dir(), on_installed=_refresh_a1111_loras, interval=float(_opt("lora_scripts_poll_seconds", 10)))
    _watcher.start()


script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_after_component(on_after_component)
script_callbacks.on_app_started(on_app_started)
