// Runs one @fal-ai/client call against FakeFal and prints a JSON summary with every JSON answer seen.
// Usage: FAKEFAL_URL=http://127.0.0.1:PORT FAKEFAL_KEY=... node conformance.mjs polling|streaming|run|stream|upload
import { useFakeFal } from "./fakefal.mjs";

const mode = process.argv[2] ?? "polling";
const answers = [];

const fal = useFakeFal({
  // Keeps a copy of each JSON answer for the shape checks; the client reads the original.
  fetch: async (url, init) => {
    const response = await fetch(url, init);
    if ((response.headers.get("content-type") ?? "").startsWith("application/json")) {
      const host = init?.headers?.["x-forwarded-host"] ?? new URL(url).host;
      answers.push({ method: init?.method ?? "GET", host, path: new URL(url).pathname, status: response.status, body: await response.clone().json() });
    }
    return response;
  },
});

const input = { prompt: "a lighthouse at dusk", image_size: "square", num_images: 2, output_format: "png" };
const statuses = [];
const updates = [];

async function main() {
  if (mode === "polling" || mode === "streaming") {
    const result = await fal.subscribe("fal-ai/flux/dev", {
      input,
      mode,
      logs: true,
      pollInterval: 20,
      onQueueUpdate: (update) => {
        statuses.push(update.status);
        updates.push(update);
      },
    });
    return { requestId: result.requestId, data: result.data };
  }
  if (mode === "run") {
    const result = await fal.run("fal-ai/flux/dev", { input });
    return { requestId: result.requestId, data: result.data };
  }
  if (mode === "stream") {
    const stream = await fal.stream("fal-ai/flux/dev", { input });
    const events = [];
    for await (const event of stream) events.push(event);
    const data = await stream.done();
    return { requestId: stream.requestId, events, data };
  }
  if (mode === "upload") {
    const url = await fal.storage.upload(new Blob(["hello from node"], { type: "text/plain" }));
    return { url };
  }
  throw new Error(`unknown mode ${mode}`);
}

try {
  const summary = await main();
  console.log(JSON.stringify({ ok: true, ...summary, statuses, updates, answers }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error), status: error?.status, body: error?.body, answers }));
  process.exitCode = 1;
}
