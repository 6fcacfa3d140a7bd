/** The tensor-graph DSL: build symbolic graphs; run them with engine/runtime, differentiate with engine/autodiff. */
export * from './dtype.ts';
export * from './tensor.ts';
export * from './shape.ts';
export * from './ops-core.ts';
export * from './ops-nn.ts';
