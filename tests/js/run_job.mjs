// Runs one job through the official @fal-ai/client against FakeFal and prints a JSON summary.
// Usage: FAKEFAL_URL=http://127.0.0.1:PORT FAKEFAL_KEY=... node run_job.mjs polling|streaming
// The key comes from the environment so that it never shows in a process listing.
import { fal } from "@fal-ai/client";

const FAL_HOSTS = new Set(["queue.fal.run", "fal.run", "rest.fal.ai", "api.fal.ai", "v3.fal.media"]);
const target = new URL(process.env.FAKEFAL_URL);
const mode = process.argv[2] ?? "polling";
const seen = [];

fal.config({
  credentials: process.env.FAKEFAL_KEY,
  // fal hosts go to the emulator, paths unchanged; X-Forwarded-Host names the host that was meant.
  requestMiddleware: async (request) => {
    const url = new URL(request.url);
    if (!FAL_HOSTS.has(url.hostname)) return request;
    seen.push(`${request.method ?? "get"} ${url.pathname}`);
    const host = url.hostname;
    url.protocol = target.protocol;
    url.host = target.host;
    return { ...request, url: url.toString(), headers: { ...(request.headers ?? {}), "x-forwarded-host": host } };
  },
});

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
