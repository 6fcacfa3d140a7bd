"""Pickled textual-inversion files for tests/embeddings.test.ts, written by torch.save (PyTorch 2.x zip format).

- a1111-style.pt: A1111's format, string_to_param {'*': Parameter [2, 8]} = arange(16) / 8, step 1500,
  sd_checkpoint 'abcdef12', sd_checkpoint_name 'sd-tiny';
- concept.bin: a diffusers concept {'<cat-toy>': float16 tensor [8]} = arange(8) / 2;
- evil.pt: an object whose unpickling would call os.system: a reader must refuse it without running it.

Run: /tmp/torchenv/bin/python tests/golden/ti/make_golden.py
"""
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
v = torch.nn.Parameter(torch.arange(16, dtype=torch.float32).reshape(2, 8) / 8)
torch.save({'string_to_token': {'*': 265}, 'string_to_param': {'*': v}, 'name': 'a1111-style', 'step': 1500,
            'sd_checkpoint': 'abcdef12', 'sd_checkpoint_name': 'sd-tiny'}, os.path.join(HERE, 'a1111-style.pt'))
torch.save({'<cat-toy>': (torch.arange(8, dtype=torch.float32) / 2).half()}, os.path.join(HERE, 'concept.bin'))


class Evil:
    def __reduce__(self):
        return (os.system, ('echo this must never run',))


torch.save({'string_to_param': {'*': Evil()}}, os.path.join(HERE, 'evil.pt'))
