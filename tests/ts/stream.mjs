// Usage: node stream.mjs BASE_URL API_KEY  -> prints one JSON line with the streamed text and final message.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
const stream = client.messages.stream({
  model: "claude-haiku-4-5",
  max_tokens: 12,
  messages: [{ role: "user", content: "What is a database index?" }],
});
let text = "";
stream.on("text", (t) => { text += t; });
const final = await stream.finalMessage();
console.log(JSON.stringify({ text, final }));
