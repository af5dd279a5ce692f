/**
 * Chat-template rendering: the Jinja `chat_template` of a tokenizer_config.json, run by
 * @huggingface/jinja with the variables transformers' apply_chat_template passes. NPR renders with
 * `enable_thinking=False` (reference/npr.md §3.3), so that is the default here; a template that
 * does not read the variable (Qwen3-Instruct-2507, npr's byte tokenizer) is unaffected.
 * Knows strings only.
 */
import { Template } from "@huggingface/jinja";
import { CheckpointFormatError } from "../util/index.ts";

export interface ChatMessage {
  role: "system" | "user" | "assistant" | "tool";
  content: string;
}

export interface ChatOptions {
  /** Append the assistant header (default true: the prompt the model continues). */
  addGenerationPrompt?: boolean;
  /** Qwen3's thinking switch (default false, as NPR). */
  enableThinking?: boolean;
}

// Parsing a 4 kB template takes milliseconds; tokenizers render the same one many times.
const cache = new Map<string, Template>();

/** Renders `template` for `messages`; `special` supplies bos/eos/pad strings. */
export function renderChatTemplate(
  template: string,
  messages: readonly ChatMessage[],
  opts: ChatOptions = {},
  special: Record<string, string> = {},
): string {
  let t = cache.get(template);
  if (!t) {
    try {
      t = new Template(template);
    } catch (err) {
      throw new CheckpointFormatError(`chat_template does not parse as Jinja (${(err as Error).message})`, {
        code: "bad_chat_template",
        param: "chat_template",
        cause: err,
      });
    }
    cache.set(template, t);
  }
  return t.render({
    messages: messages.map((m) => ({ ...m })),
    add_generation_prompt: opts.addGenerationPrompt ?? true,
    enable_thinking: opts.enableThinking ?? false,
    ...special,
  });
}
