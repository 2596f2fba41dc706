"""``falwrap demo``: falwrap end to end against an in-process FakeFal, whatever the environment says."""

from __future__ import annotations

import time

from falwrap.cli.context import Context
from falwrap.cli.exits import EXIT_OK
from falwrap.cli.generate import out_dir, rounded_seconds
from falwrap.cli.output import format_usd

__all__ = ["DEMO_IMAGE_PROMPT", "DEMO_VIDEO_PROMPT", "demo_command"]

#: Prompts of ``falwrap demo``: the video animates the image the first call made.
DEMO_IMAGE_PROMPT = "a lighthouse on a cliff at dusk, waves below, warm light in the window"
DEMO_VIDEO_PROMPT = "the waves roll in and the lighthouse beam sweeps across the sea"


def demo_command(context: Context) -> int:
    """``falwrap demo``: an image and a video made offline by the built-in emulator."""
    from falwrap.client import FalClient
    from falwrap.config import FalConfig, RateLimitConfig
    from falwrap.testing import FakeFal

    out = out_dir(context.args)
    assert out is not None
    started = time.monotonic()
    # Built from scratch, not from the environment: the demo must work whatever FAL_* or .env say.
    with FakeFal() as fal, context.progress("demo") as progress:
        context.console.add_secret(fal.key)
        config = FalConfig(
            api_key=fal.key, base_url=fal.url, rate_limit=RateLimitConfig(requests_per_minute=600, burst=2)
        )
        with FalClient(config) as client:
            progress.begin("image")
            # PNG rather than flux's default JPEG: a lossless file is what the video model animates.
            image = client.image(DEMO_IMAGE_PROMPT, output_format="png", on_progress=progress.update)
            progress.set_state("saving the image")
            (image_file,) = image.save(out, prefix="demo-image")
            progress.begin("video")
            # The local file goes up like any user's would: inline or through fal's storage.
            video = client.video(DEMO_VIDEO_PROMPT, image=image_file, on_progress=progress.update)
            progress.set_state("saving the video")
            video_file = video.save(out, prefix="demo-video")
    elapsed = time.monotonic() - started
    outputs = [
        ("image", image.model, image.request_id, image.duration_ms, image.cost_usd, image_file),
        ("video", video.model, video.request_id, video.duration_ms, video.cost_usd, video_file),
    ]
    total = image.cost_usd + video.cost_usd
    if context.as_json:
        context.console.json(
            {
                "offline": True,
                "out": str(out.resolve()),
                "seconds": round(elapsed, 2),
                "total_cost_usd": total,
                "outputs": [
                    {
                        "kind": kind,
                        "model": model,
                        "request_id": rid,
                        "seconds": rounded_seconds(ms),
                        "cost_usd": cost,
                        "file": str(path.resolve()),
                    }
                    for kind, model, rid, ms, cost, path in outputs
                ],
            }
        )
        return EXIT_OK
    console = context.console
    console.table(
        ("model", "request id", "seconds", "cost", "file"),
        [
            (model, rid, f"{rounded_seconds(ms):.1f}", format_usd(cost), str(path))
            for _k, model, rid, ms, cost, path in outputs
        ],
    )
    console.out()
    console.out(
        f"Made offline by the built-in FakeFal emulator in {elapsed:.1f} s: no key, no network, "
        f"nothing billed (real price {format_usd(total)})."
    )
    console.out('Next: set FAL_KEY (environment or .env) and run: falwrap image "your prompt"')
    return EXIT_OK
