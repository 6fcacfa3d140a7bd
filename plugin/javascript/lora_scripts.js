// lora-scripts extension, browser side: a "Send to lora-scripts dataset" button beside A1111's own
// send-to buttons, and the embedded lora-scripts page themed like A1111.
(function () {
  function app() {
    return typeof gradioApp === 'function' ? gradioApp() : document;
  }

  function addSendButton(tab) {
    var row = app().querySelector('#image_buttons_' + tab);
    var hidden = app().querySelector('#lora_scripts_send_' + tab);
    if (!row || !hidden || row.querySelector('.lora-scripts-send')) return;
    var b = document.createElement('button');
    b.className = 'lg secondary gradio-button tool svelte-cmf5ev lora-scripts-send';
    b.title = 'Send to lora-scripts dataset (the selected image, or all when none is selected), with its prompt as caption';
    b.textContent = '🧪';
    b.addEventListener('click', function () {
      hidden.click();
    });
    row.appendChild(b);
  }

  function themeFrame() {
    var frame = app().querySelector('#lora_scripts_frame');
    if (!frame || frame.dataset.themed) return;
    var dark = document.body.classList.contains('dark') || /[?&]__theme=dark/.test(location.search);
    frame.dataset.themed = '1';
    frame.src = frame.dataset.base + '/?embed=a1111&theme=' + (dark ? 'dark' : 'light');
    // A server that is down shows how to start it instead of an empty frame (an opaque answer is enough).
    fetch(frame.dataset.base + '/internal/ping', { mode: 'no-cors', cache: 'no-store' }).catch(function () {
      var note = app().querySelector('#lora_scripts_frame_note');
      if (note) note.style.display = 'block';
      frame.style.display = 'none';
    });
  }

  function update() {
    addSendButton('txt2img');
    addSendButton('img2img');
    themeFrame();
  }

  if (typeof onAfterUiUpdate === 'function') onAfterUiUpdate(update);
  else if (typeof onUiUpdate === 'function') onUiUpdate(update);
  else document.addEventListener('DOMContentLoaded', update);
})();
