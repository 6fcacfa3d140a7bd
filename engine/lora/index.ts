/** Public LoRA API: formats, key mapping to LDM weights, load-time merging, prompt tags, names, writers. */
export type { F32Tensor, WeightMap, LoraKind, LoraModule, ParsedLora, LoraPart } from './types.ts';
export { parseLoraTensors } from './parse.ts';
export { loadLora, loraFileOf } from './load.ts';
export { computeDelta, applyModule } from './delta.ts';
export { TargetIndex, resolveTargets, type Target } from './targets.ts';
export { applyStack, type StackLayer, type ApplyReport, type ApplyOptions } from './apply.ts';
export { LoraMerger, type StackItem, type MergeResult, type LoraMergerOptions } from './merge.ts';
export { extractPromptTags, type LoraTag, type PromptTags } from './prompt-tags.ts';
export { stackFromPrompt, type PromptStack } from './prompt-stack.ts';
export { LoraLibrary, closestNames, type LoraEntry } from './resolve.ts';
export { writeKohyaLora, writePeftLora, kohyaMetadata, type KohyaMetadataInput, type SaveDType } from './write.ts';
export { sshsHashes, addnetHash, loraFileHash } from './hash.ts';
export { describeLora, type LoraDescription } from './describe.ts';
export { convertLora, type ConvertOptions } from './convert.ts';
export { bakeCheckpoint, type BakeOptions } from './bake.ts';
export { parseModuleName, kohyaPathToDotted, kohyaModuleName, diffusersModuleName, moduleForLdmKey, loraModuleToLdmKey } from './names.ts';
