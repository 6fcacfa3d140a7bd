import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { JobQueue, CancelledError, type Job, type JobContext } from '../server/queue.ts';
import { progressFraction } from '../server/progress.ts';

/** A real job: a sha256 chain, one link per step, yielding between steps; returns the steps it completed. */
function hashJob(steps: number, log: string[], name: string, stepMs = 2): Job<{ done: number; digest: string }> {
  return {
    kind: 'test_hash',
    async run(ctx: JobContext) {
      log.push(`start ${name}`);
      let h = Buffer.from(name);
      let done = 0;
      for (let s = 1; s <= steps; s++) {
        if (ctx.stopRequest() === 'interrupt') break;
        h = createHash('sha256').update(h).digest();
        await new Promise((r) => setTimeout(r, stepMs));
        done = s;
        ctx.progress({ step: s, total: steps });
      }
      log.push(`end ${name}`);
      return { done, digest: h.toString('hex') };
    },
  };
}

test('jobs run one at a time in arrival order', async () => {
  const q = new JobQueue();
  const log: string[] = [];
  const handles = ['a', 'b', 'c', 'd'].map((n) => q.submit(hashJob(5, log, n)));
  assert.deepEqual(q.pendingIds().length + (q.current() ? 1 : 0), 4);
  const results = await Promise.all(handles.map((h) => h.promise));
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c', 'start d', 'end d']);
  for (const r of results) assert.equal(r.done, 5);
  // The chain really ran: the digest equals five sha256 rounds of the name.
  let h = Buffer.from('c');
  for (let i = 0; i < 5; i++) h = createHash('sha256').update(h).digest();
  assert.equal(results[2]!.digest, h.toString('hex'));
  assert.equal(q.current(), null);
});

test('interrupt stops the running job at its next step and it returns what it did; the next job still runs', async () => {
  const q = new JobQueue();
  const log: string[] = [];
  const a = q.submit(hashJob(1000, log, 'a', 5));
  const b = q.submit(hashJob(3, log, 'b'));
  await new Promise<void>((r) => q.on('progress', (s) => s.step >= 3 && r()));
  assert.equal(q.interrupt(), true);
  const ra = await a.promise;
  assert.ok(ra.done >= 3 && ra.done < 1000, `a did ${ra.done} steps`);
  assert.equal((await b.promise).done, 3, 'interrupt applies to the running job only');
});

test('skip is visible to the running job and can be cleared', async () => {
  const q = new JobQueue();
  const seen: (string | null)[] = [];
  const h = q.submit({
    kind: 'test_skip',
    async run(ctx) {
      for (let i = 0; i < 50 && ctx.stopRequest() !== 'skip'; i++) await new Promise((r) => setTimeout(r, 2));
      seen.push(ctx.stopRequest());
      ctx.clearSkip();
      seen.push(ctx.stopRequest());
    },
  });
  await new Promise((r) => setTimeout(r, 10));
  q.skip();
  await h.promise;
  assert.deepEqual(seen, ['skip', null]);
});

test('cancel drops a waiting job and interrupts a running one, so nothing is left stuck', async () => {
  const q = new JobQueue();
  const log: string[] = [];
  const a = q.submit(hashJob(1000, log, 'a', 5));
  const b = q.submit(hashJob(3, log, 'b'));
  const c = q.submit(hashJob(3, log, 'c'));
  b.cancel();
  await assert.rejects(b.promise, CancelledError);
  await new Promise((r) => setTimeout(r, 20));
  a.cancel();
  assert.ok((await a.promise).done < 1000);
  assert.equal((await c.promise).done, 3);
  assert.ok(!log.includes('start b'));
  await q.idle();
  assert.equal(q.current(), null);
  assert.deepEqual(q.pendingIds(), []);
});

test('a failing job rejects its own promise only', async () => {
  const q = new JobQueue();
  const bad = q.submit({ kind: 'x', run: async () => { throw new Error('boom'); } });
  const good = q.submit({ kind: 'x', run: async () => 7 });
  await assert.rejects(bad.promise, /boom/);
  assert.equal(await good.promise, 7);
});

test('close cancels waiting jobs and interrupts the running one', async () => {
  const q = new JobQueue();
  const log: string[] = [];
  const a = q.submit(hashJob(1000, log, 'a', 5));
  const b = q.submit(hashJob(3, log, 'b'));
  const bRejected = assert.rejects(b.promise, CancelledError);
  await new Promise((r) => setTimeout(r, 15));
  await q.close();
  assert.ok((await a.promise).done < 1000);
  await bRejected;
  await assert.rejects(q.submit(hashJob(1, log, 'late')).promise, CancelledError);
});

test('A1111 progress formula', () => {
  assert.equal(progressFraction({ jobNo: 0, jobCount: 1, step: 0, total: 20 }), 0.01);
  assert.equal(progressFraction({ jobNo: 0, jobCount: 1, step: 10, total: 20 }), 0.51);
  assert.equal(progressFraction({ jobNo: 1, jobCount: 2, step: 10, total: 20 }), 0.01 + 0.5 + 0.25);
  assert.equal(progressFraction({ jobNo: 1, jobCount: 1, step: 20, total: 20 }), 1);
  assert.equal(progressFraction({ jobNo: 0, jobCount: 0, step: 0, total: 0 }), 0);
});

test('a client-chosen id that is waiting or running is refused; a handle cancels only its own job; pending is per owner', async () => {
  const q = new JobQueue();
  const log: string[] = [];
  const a = q.submit(hashJob(200, log, 'a', 2), { id: 'task(x)', owner: 'alice' });
  const b = q.submit(hashJob(3, log, 'b'), { id: 'task(y)', owner: 'alice' });
  const c = q.submit(hashJob(3, log, 'c'), { owner: 'bob' });
  assert.throws(() => q.submit(hashJob(1, log, 'evil'), { id: 'task(y)', owner: 'bob' }), (e: Error & { status?: number }) => e.status === 409 && /task\(y\)/.test(e.message));
  assert.throws(() => q.submit(hashJob(1, log, 'evil'), { id: 'task(x)', owner: 'bob' }), /already queued or running/);
  assert.deepEqual(q.pendingIds('bob'), [c.id]);
  assert.ok(q.pendingIds('alice').includes('task(y)') && !q.pendingIds('alice').includes(c.id));
  c.cancel();
  await assert.rejects(c.promise, CancelledError);
  assert.ok(!q.pendingIds().includes(c.id) && q.pendingIds().includes('task(y)'), "bob's cancel removed his own job only");
  assert.equal((await b.promise).done, 3);
  assert.ok((await a.promise).done === 200);
  // Once ended, the id is free again.
  assert.equal((await q.submit(hashJob(2, log, 'again'), { id: 'task(y)' }).promise).done, 2);
});
