import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile, readdir, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readCaptionTable, writeCaptions, mergeCaption } from '../engine/train/caption-table.ts';

async function folder(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'captions-'));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  return dir;
}

test('mergeCaption: missing keeps hand edits, overwrite replaces, append adds only new tags', () => {
  assert.deepEqual(mergeCaption('', 'a cat', 'missing'), { after: 'a cat', action: 'added' });
  assert.deepEqual(mergeCaption('my cat', 'a cat', 'missing'), { after: 'my cat', action: 'kept' });
  assert.deepEqual(mergeCaption('my cat', 'a cat', 'overwrite'), { after: 'a cat', action: 'replaced' });
  assert.deepEqual(mergeCaption('cat, sofa', 'Sofa, red, cat, blue', 'append'), { after: 'cat, sofa, red, blue', action: 'appended' });
  assert.deepEqual(mergeCaption('cat, sofa', 'sofa', 'append'), { after: 'cat, sofa', action: 'kept' });
});

test('writeCaptions keeps row order, other columns and untouched rows of metadata.csv', async () => {
  const dir = await folder({
    'metadata.csv': 'file_name,caption,score\nb.png,"hand, edited",5\na.png,,3\n',
  });
  const changes = await writeCaptions(
    new Map([
      ['a.png', 'auto a'],
      ['b.png', 'auto b'],
      ['sub/c.png', 'auto "c", quoted'],
    ]),
    { root: dir, target: 'metadata', mode: 'missing' },
  );
  assert.deepEqual(
    changes.map((c) => [c.key, c.action, c.after]),
    [
      ['a.png', 'added', 'auto a'],
      ['b.png', 'kept', 'hand, edited'],
      ['sub/c.png', 'added', 'auto "c", quoted'],
    ],
  );
  const table = await readCaptionTable(join(dir, 'metadata.csv'));
  assert.deepEqual(table.columns, ['file_name', 'caption', 'score']);
  assert.deepEqual(
    table.rows.map((r) => [r.fileName, r.caption, r.fields['score'] ?? '']),
    [
      ['b.png', 'hand, edited', '5'],
      ['a.png', 'auto a', '3'],
      ['sub/c.png', 'auto "c", quoted', ''],
    ],
  );
  // No temp files left behind by the atomic write.
  assert.deepEqual((await readdir(dir)).sort(), ['metadata.csv']);
});

test('writeCaptions: dry run writes nothing; a new table is created; jsonl tables stay jsonl', async () => {
  const dir = await folder({ 'metadata.jsonl': '{"file_name":"a.png","text":"one","extra":[1,2]}\n' });
  const before = await readFile(join(dir, 'metadata.jsonl'), 'utf8');
  const dry = await writeCaptions(new Map([['a.png', 'two']]), { root: dir, target: 'metadata', mode: 'overwrite', dryRun: true });
  assert.deepEqual(dry.map((c) => c.action), ['replaced']);
  assert.equal(await readFile(join(dir, 'metadata.jsonl'), 'utf8'), before);
  await writeCaptions(new Map([['a.png', 'two']]), { root: dir, target: 'metadata', mode: 'overwrite' });
  assert.deepEqual(JSON.parse((await readFile(join(dir, 'metadata.jsonl'), 'utf8')).trim()), { file_name: 'a.png', text: 'two', extra: [1, 2] });

  const empty = await folder({});
  await writeCaptions(new Map([['x.png', 'new']]), { root: empty, target: 'metadata', mode: 'missing' });
  assert.equal(await readFile(join(empty, 'metadata.csv'), 'utf8'), 'file_name,caption\nx.png,new\n');
});

test('writeCaptions: sidecars follow the mode; keys outside the folder are refused', async () => {
  const dir = await folder({ 'a.txt': 'mine\n' });
  const changes = await writeCaptions(
    new Map([
      ['a.png', 'auto'],
      ['b.png', 'auto b'],
    ]),
    { root: dir, target: 'sidecar', mode: 'missing' },
  );
  assert.deepEqual(changes.map((c) => c.action), ['kept', 'added']);
  assert.equal(await readFile(join(dir, 'a.txt'), 'utf8'), 'mine\n');
  assert.equal(await readFile(join(dir, 'b.txt'), 'utf8'), 'auto b\n');
  await assert.rejects(writeCaptions(new Map([['../escape.png', 'x']]), { root: dir, target: 'sidecar', mode: 'overwrite' }), /outside the dataset folder/);
});

test('readCaptionTable names the file and row of each problem', async () => {
  const dir = await folder({ 'dup.csv': 'file_name,caption\na.png,x\na.png,y\n', 'nocap.csv': 'file_name,score\na.png,1\n' });
  await assert.rejects(readCaptionTable(join(dir, 'dup.csv')), /dup\.csv: a\.png is listed twice \(rows 2 and 3\)/);
  await assert.rejects(readCaptionTable(join(dir, 'nocap.csv')), /nocap\.csv: no caption column/);
});
