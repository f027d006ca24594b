// The npm `openai` SDK against a running teegate, unchanged but for baseURL and key.
// Run by tests/test_e2e_typescript.py with TEEGATE_BASE_URL and TEEGATE_API_KEY set.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.TEEGATE_API_KEY,
  baseURL: process.env.TEEGATE_BASE_URL,
  maxRetries: 0,
});
const model = "Qwen/Qwen3-235B-A22B-Instruct-2507-TEE";
const messages = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Explain quantum computing" },
];

test("chat completion", async () => {
  const response = await client.chat.completions.create({ model, messages, max_tokens: 1024 });
  assert.equal(response.object, "chat.completion");
  assert.ok(response.choices[0].message.content.length > 0);
  assert.ok(response.usage.completion_tokens > 0);
});

test("stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model, messages, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    if (chunk.usage) usage = chunk.usage;
  }
  const whole = await client.chat.completions.create({ model, messages });
  assert.equal(text, whole.choices[0].message.content);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test("non-TEE model is refused with model_not_confidential", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "deepseek-ai/DeepSeek-V3", messages }),
    (error) => error.status === 400 && error.code === "model_not_confidential",
  );
});
