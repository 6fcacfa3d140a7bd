/**
 * `/sdapi/v1/progress` and the socket.io `progress` event, from the queue's running-job state.
 * A1111 formula: progress = 0.01 + job_no/job_count + (1/job_count)·(step/steps), capped at 1;
 * eta_relative = elapsed/progress − elapsed; idle → progress 0, eta 0.
 */
import type { RawImage } from './backend.ts';
import { encodeImage, type SamplesFormat } from './images.ts';
import type { RunningState } from './queue.ts';

export interface ProgressState {
  skipped: boolean;
  interrupted: boolean;
  stopping_generation: boolean;
  job: string;
  job_count: number;
  job_timestamp: string;
  job_no: number;
  sampling_step: number;
  sampling_steps: number;
}

export interface ProgressResponse {
  progress: number;
  eta_relative: number;
  state: ProgressState;
  current_image: string | null;
  textinfo: string | null;
}

const IDLE_STATE: ProgressState = {
  skipped: false,
  interrupted: false,
  stopping_generation: false,
  job: '',
  job_count: 0,
  job_timestamp: '0',
  job_no: 0,
  sampling_step: 0,
  sampling_steps: 0,
};

export function progressFraction(s: Pick<RunningState, 'jobNo' | 'jobCount' | 'step' | 'total'>): number {
  if (s.jobCount <= 0) return 0;
  let p = 0.01 + s.jobNo / s.jobCount;
  if (s.total > 0) p += (1 / s.jobCount) * (s.step / s.total);
  return Math.min(p, 1);
}

/** Renders previews at most once per (job, step), however many clients poll. */
export class PreviewCache {
  private key = '';
  private value: Promise<string | null> = Promise.resolve(null);

  get(s: Readonly<RunningState>, format: SamplesFormat): Promise<string | null> {
    if (!s.preview) return Promise.resolve(null);
    const key = `${s.id}/${s.jobNo}/${s.step}/${format}`;
    if (key !== this.key) {
      this.key = key;
      const render = s.preview;
      this.value = render()
        .then((img: RawImage) => encodeImage(img, format, null))
        .then((b) => b.toString('base64'))
        .catch(() => null);
    }
    return this.value;
  }
}

/** `state` is the running job's state (a snapshot for events), or null when idle. */
export async function progressResponse(
  state: Readonly<RunningState> | null,
  previews: PreviewCache,
  opts: { skipCurrentImage: boolean; format: SamplesFormat; now?: number },
): Promise<ProgressResponse> {
  const s = state;
  if (!s) return { progress: 0, eta_relative: 0, state: { ...IDLE_STATE }, current_image: null, textinfo: null };
  const progress = progressFraction(s);
  const elapsed = ((opts.now ?? Date.now()) - s.startedAt) / 1000;
  const eta = progress > 0 ? elapsed / progress - elapsed : 0;
  const current_image = opts.skipCurrentImage ? null : await previews.get(s, opts.format);
  return {
    progress,
    eta_relative: eta,
    state: {
      skipped: s.skipped,
      interrupted: s.interrupted,
      stopping_generation: false,
      job: s.kind,
      job_count: s.jobCount,
      job_timestamp: s.timestamp,
      job_no: s.jobNo,
      sampling_step: s.step,
      sampling_steps: s.total,
    },
    current_image,
    textinfo: s.textinfo,
  };
}
