// npm `ehbp` (Tinfoil's EHBP client) under the npm `openai` SDK: one completion encrypted
// end to end to the attested enclave, through teegate. Run by tests/test_e2ee.py with
// TEEGATE_BASE_URL, TEEGATE_API_KEY, TEEGATE_HPKE_KEY_CONFIG (hex) and TEEGATE_CANARY set.
import { test } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { Identity, Transport } from "ehbp";

const model = "deepseek-ai/DeepSeek-V3-0324-TEE";
const baseURL = process.env.TEEGATE_BASE_URL;
const config = Uint8Array.from(Buffer.from(process.env.TEEGATE_HPKE_KEY_CONFIG, "hex"));
const transport = new Transport(await Identity.unmarshalPublicConfig(config), new URL(baseURL).host);

const client = new OpenAI({
  apiKey: process.env.TEEGATE_API_KEY,
  baseURL,
  maxRetries: 0,
  defaultHeaders: { "X-TEE-Model": model, "X-TEE-Max-Output-Tokens": "16" },
  fetch: (input, init) => transport.request(input, init),
});

test("encrypted completion", async () => {
  const canary = process.env.TEEGATE_CANARY;
  const response = await client.chat.completions.create({
    model, messages: [{ role: "user", content: `echo: ${canary}` }], max_tokens: 16,
  });
  assert.equal(response.choices[0].message.content, canary);
});
