/**
 * Public surface of tokenizer/: NprTokenizer (any HF tokenizer.json, the 8 NPR tags, tag
 * locations, parser token strings, chat templates), the streaming detokenizer, npr's built-in
 * byte-level tokenizer and its compact task tokenizer. Other folders import tokenizer/ only
 * through this file. Rank 2: imports util and format only; knows nothing about models or tensors.
 */
export { NprTokenizer, type TagHit } from "./tokenizer.ts";
export { renderChatTemplate, type ChatMessage, type ChatOptions } from "./chat-template.ts";
export { StreamDecoder, type Decodes } from "./stream-decoder.ts";
export { BYTE_SPECIAL_TOKENS, CHATML_TEMPLATE, byteToUnicode, byteTokenizer, byteTokenizerFiles } from "./byte-tokenizer.ts";
export { TASK_MAX_NUMBER, TASK_SPLIT_PATTERN, taskTokenizer, taskTokenizerFiles, type TaskVocabulary } from "./task-tokenizer.ts";
