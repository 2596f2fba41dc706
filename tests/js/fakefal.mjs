// Points the official @fal-ai/client at FakeFal, for the scripts in this directory.
// fal's hosts go to the emulator with the path unchanged; X-Forwarded-Host says which host was meant.
// FAKEFAL_URL and FAKEFAL_KEY come from the environment so that the key never shows in a process listing.
import { fal } from "@fal-ai/client";

const FAL_HOSTS = new Set(["queue.fal.run", "fal.run", "rest.fal.ai", "api.fal.ai", "v3.fal.media"]);

// Configures `fal` for FakeFal and returns it. `onRequest(request, url)` sees each request meant
// for a fal host before it is redirected; the other options (a `fetch`, say) go to fal.config as they are.
export function useFakeFal({ onRequest = () => {}, ...options } = {}) {
  const target = new URL(process.env.FAKEFAL_URL);
  fal.config({
    credentials: process.env.FAKEFAL_KEY,
    requestMiddleware: async (request) => {
      const url = new URL(request.url);
      if (!FAL_HOSTS.has(url.hostname)) return request;
      onRequest(request, url);
      const host = url.hostname;
      url.protocol = target.protocol;
      url.host = target.host;
      return { ...request, url: url.toString(), headers: { ...(request.headers ?? {}), "x-forwarded-host": host } };
    },
    ...options,
  });
  return fal;
}
