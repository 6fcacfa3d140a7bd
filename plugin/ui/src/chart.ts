/**
 * The training chart (uPlot): loss raw and smoothed (the trainer's own running average) on the left axis,
 * learning rate and gradient norm on their own right-hand axes, x = optimizer step.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { t } from './i18n.ts';

export interface ChartPoint {
  step: number;
  loss: number | null;
  lossAverage: number | null;
  lr: number | null;
  gradNorm: number | null;
}

export interface LossChart {
  root: HTMLElement;
  set(points: ChartPoint[]): void;
  add(p: ChartPoint): void;
  points(): number;
}

export function lossChart(): LossChart {
  const root = document.createElement('div');
  root.className = 'loss-chart';
  root.setAttribute('role', 'img');
  root.setAttribute('aria-label', `${t('loss')} / ${t('lr')} / ${t('grad_norm')}`);
  let data: ChartPoint[] = [];
  const css = getComputedStyle(document.documentElement);
  const color = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
  const axis = { stroke: color('--fg-muted', '#888'), grid: { stroke: color('--grid', 'rgba(128,128,128,0.2)') } };
  const width = () => Math.max(280, root.clientWidth || 600);
  const plot = new uPlot(
    {
      width: width(),
      height: 240,
      scales: { x: { time: false }, loss: {}, lr: {}, gn: {} },
      axes: [
        { ...axis, label: t('step') },
        { ...axis, scale: 'loss', label: t('loss') },
        { ...axis, scale: 'lr', side: 1, grid: { show: false }, values: (_u, vals) => vals.map((v) => (v == null ? '' : v.toExponential(0))) },
        { ...axis, scale: 'gn', side: 1, grid: { show: false } },
      ],
      series: [
        { label: t('step') },
        { label: t('loss'), scale: 'loss', stroke: 'rgba(80,140,230,0.45)', width: 1 },
        { label: t('loss_smoothed'), scale: 'loss', stroke: '#2f6fd6', width: 2 },
        { label: t('lr'), scale: 'lr', stroke: '#d08a1c', width: 1, dash: [4, 4] },
        { label: t('grad_norm'), scale: 'gn', stroke: '#3aa676', width: 1 },
      ],
    },
    [[], [], [], [], []],
    root,
  );
  const redraw = () => {
    plot.setData([data.map((p) => p.step), data.map((p) => p.loss), data.map((p) => p.lossAverage), data.map((p) => p.lr), data.map((p) => p.gradNorm)] as uPlot.AlignedData);
    root.dataset['points'] = String(data.length);
  };
  new ResizeObserver(() => plot.setSize({ width: width(), height: 240 })).observe(root);
  return {
    root,
    set(points) {
      data = [...points];
      redraw();
    },
    add(p) {
      const last = data.at(-1);
      if (last && last.step === p.step) data[data.length - 1] = p;
      else data.push(p);
      redraw();
    },
    points: () => data.length,
  };
}
