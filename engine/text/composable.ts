/**
 * A1111 composable diffusion (`prompt_parser.get_multicond_prompt_list`): a positive prompt splits on the
 * word `AND` into sub-prompts, each with an optional trailing `:weight` (default 1). The sampler combines
 * the sub-prompts' guidance with these weights. Negative prompts are not split.
 */

// Python's `\b` is Unicode-aware; a word character is a letter, digit or underscore.
const AND_SPLIT = /(?<![\p{L}\p{N}_])AND(?![\p{L}\p{N}_])/u;
const TRAILING_WEIGHT = /^([\s\S]*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$/;

export interface SubPrompt {
  text: string;
  weight: number;
}

export function splitComposablePrompt(prompt: string): SubPrompt[] {
  return prompt.split(AND_SPLIT).map((sub) => {
    const m = TRAILING_WEIGHT.exec(sub)!;
    return { text: m[1]!, weight: m[2] === undefined ? 1.0 : Number(m[2]) };
  });
}
