/**
 * kohya's `loss/average`: a moving average over one epoch's worth of steps. In the first epoch every step
 * adds a slot; afterwards step i of the epoch replaces slot i, so the window is always the last epoch.
 */
export class LossAverage {
  private readonly slots: number[] = [];
  private total = 0;

  /** `epoch` and `stepInEpoch` are 0-based. Returns the new average. */
  add(epoch: number, stepInEpoch: number, loss: number): number {
    if (epoch === 0 || stepInEpoch >= this.slots.length) {
      this.slots.push(loss);
      this.total += loss;
    } else {
      this.total += loss - this.slots[stepInEpoch]!;
      this.slots[stepInEpoch] = loss;
    }
    return this.average;
  }

  get average(): number {
    return this.slots.length === 0 ? NaN : this.total / this.slots.length;
  }
}
