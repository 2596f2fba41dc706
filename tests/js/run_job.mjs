// Runs one job through the official @fal-ai/client against FakeFal and prints a JSON summary.
// Usage: FAKEFAL_URL=http://127.0.0.1:PORT FAKEFAL_KEY=... node run_job.mjs polling|streaming
import { useFakeFal } from "./fakefal.mjs";

const mode = process.argv[2] ?? "polling";
const seen = [];
const fal = useFakeFal({ onRequest: (request, url) => seen.push(`${request.method ?? "get"} ${url.pathname}`) });

const statuses = [];
let logCount = 0;
try {
  const result = await fal.subscribe("fal-ai/flux/dev", {
    input: { prompt: "a lighthouse at dusk", image_size: "square", num_images: 2, output_format: "png" },
    mode,
    logs: true,
    pollInterval: 20,
    onQueueUpdate: (update) => {
      statuses.push(update.status);
      if (Array.isArray(update.logs)) logCount = update.logs.length;
    },
  });
  console.log(JSON.stringify({ ok: true, requestId: result.requestId, data: result.data, statuses, logCount, seen }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error), status: error?.status, body: error?.body, seen }));
  process.exitCode = 1;
}
