// The npm `openai` SDK's embeddings against a running teegate that serves a confidential
// embedding model. Run by tests/test_e2e_typescript.py with TEEGATE_BASE_URL and
// TEEGATE_API_KEY set.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.TEEGATE_API_KEY,
  baseURL: process.env.TEEGATE_BASE_URL,
  maxRetries: 0,
});
const model = "Qwen/Qwen3-Embedding-0.6B-TEE";
const docs = ["The enclave attests its key.", "The enclave attests its key.", "Bananas."];

function decode(embedding) {
  if (Array.isArray(embedding)) return embedding;
  const bytes = Buffer.from(embedding, "base64");
  return Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4));
}

const norm = (v) => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

test("each input form, in each encoding", async () => {
  const forms = ["one text", docs, [17, 4, 1999], [[17, 4], [1999, 3, 8, 0]]];
  for (const input of forms) {
    for (const encoding_format of ["float", "base64", undefined]) {
      const response = await client.embeddings.create({ model, input, encoding_format });
      const count = typeof input === "string" || typeof input[0] === "number" ? 1 : input.length;
      assert.equal(response.data.length, count);
      for (const item of response.data) {
        const vector = decode(item.embedding);
        assert.equal(vector.length, 1024);
        assert.ok(Math.abs(norm(vector) - 1) < 1e-5);
      }
      assert.ok(response.usage.prompt_tokens > 0);
    }
  }
});

test("equal inputs give equal vectors; dimensions are honoured", async () => {
  const response = await client.embeddings.create({ model, input: docs, dimensions: 64 });
  const [a, b, c] = response.data.map((item) => item.embedding);
  assert.equal(a.length, 64);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("the non-TEE twin is refused with a suggestion", async () => {
  await assert.rejects(
    client.embeddings.create({ model: "Qwen/Qwen3-Embedding-0.6B", input: "hi" }),
    (error) =>
      error.status === 400 &&
      error.code === "model_not_confidential" &&
      error.message.includes(`Use '${model}' instead`),
  );
});
