"""The "LoRA training" tab's HTML: the lora-scripts server's own page in a frame, so A1111 shows the same
dataset, captioning and training screens as the browser UI (one UI, maintained once)."""

from __future__ import annotations

import html

from . import DEFAULT_URL


def tab_html(url: str = DEFAULT_URL, height: str = "calc(100vh - 160px)") -> str:
    base = html.escape((url or DEFAULT_URL).rstrip("/"), quote=True)
    # The page's theme follows A1111's (javascript/lora_scripts.js adds ?theme= once A1111's body class is known).
    return (
        f'<div id="lora_scripts_frame_wrap" style="width:100%;height:{html.escape(height, quote=True)};min-height:480px">'
        f'<iframe id="lora_scripts_frame" data-base="{base}" src="{base}/?embed=a1111" '
        'title="lora-scripts" style="width:100%;height:100%;border:0;border-radius:8px" '
        'allow="clipboard-write"></iframe>'
        f'<p id="lora_scripts_frame_note" style="display:none">The lora-scripts server at {base} is not answering. '
        f'Start it with <code>lora-scripts serve --port {html.escape(base.rsplit(":", 1)[-1].split("/")[0], quote=True)}</code> '
        'and set its URL in Settings → lora-scripts.</p></div>'
    )
